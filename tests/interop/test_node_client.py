"""A client in another language: Node's @grpc/grpc-js + @grpc/proto-loader, loading proto/ directly.

The set-up installs the two npm packages into tests/interop/node_modules (git-ignored; reused when
present). The client searches with typed filters and facets, then opens the next page with the
token the first page returned, and sends a filter on an undeclared field.
"""
from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).resolve().parent
PROTO = HERE.parents[1] / "proto"
PACKAGES = ("@grpc/grpc-js@1", "@grpc/proto-loader@0.8")


@pytest.fixture(scope="session")
def node() -> tuple[str, Path]:
    """(the node executable, the node_modules folder holding the two packages)."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if not node or not npm:
        pytest.fail("node and npm are needed for the interop test (Debian: apt-get install nodejs npm)")
    modules = HERE / "node_modules"
    if not all((modules / p.rsplit("@", 1)[0] / "package.json").exists() for p in PACKAGES):
        result = subprocess.run([npm, "install", "--no-save", "--no-audit", "--no-fund", "--no-package-lock",
                                 "--prefix", str(HERE), *PACKAGES], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, f"npm install failed:\n{result.stderr[-2000:]}"
    return node, modules


def test_node_client_searches_with_a_filter_and_a_page_token(node, search_stack, stdlib_index):
    executable, modules = node
    result = subprocess.run([executable, str(HERE / "search_client.js"), search_stack, stdlib_index.scene, str(PROTO)],
                            capture_output=True, text=True, timeout=60, env={"NODE_PATH": str(modules)})
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    assert {"name": stdlib_index.scene, "fields": ["category:keyword"]} in out["scenes"]
    first, second = out["first"], out["second"]
    assert len(first["items"]) == 5 and first["offset"] == 0 and first["next"]
    assert {i["category"] for i in first["items"] + second["items"]} <= {"csv", "json"}
    assert "csv.writer" in [i["question"] for i in first["items"]] and first["items"][0]["found_by"] == ["dense"]
    assert second["offset"] == 5 and not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    [facet] = first["facets"]
    assert facet["field"] == "category" and {value for value, _ in facet["counts"]} == {"csv", "json"}
    assert out["refused"]["code"] == 3 and "field 'colour'" in out["refused"]["details"]  # INVALID_ARGUMENT
