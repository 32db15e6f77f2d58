"""What every built image is: a non-root user, no compiler, no pip cache, no test dependencies.

Each fact is read inside the image (tests/images/image_facts.py run by the
image's own python, as the image's own user, root file system read-only).
"""
from __future__ import annotations

import re
import tomllib

import pytest

from tests.support.containers import (
    ROOT,
    ContainerSpec,
    Mount,
    image_config,
    run_to_end,
)

pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(2400)]

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ONLINE = {"services", "operator"}


def _names(requirements: list[str]) -> set[str]:
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower() for r in requirements}
    return names - {"mmsearch"}


# What only the tests and the demo install: none of it belongs in an image.
TEST_ONLY = _names(PYPROJECT["project"]["optional-dependencies"]["test"]
                   + PYPROJECT["project"]["optional-dependencies"]["dev"]) | {"pytest"}
TORCH = {"torch", "transformers", "sentence-transformers"}
# The search engine's stack (the `engine` extra and what pymilvus pulls): never in the operator's image.
ENGINE = {"numpy", "onnxruntime", "pymilvus", "milvus-lite", "pandas", "tokenizers", "pillow", "boto3", "grpcio",
          "protobuf"}


def test_the_operator_image_carries_none_of_the_engine(image_facts):
    installed = set(image_facts("operator")["distributions"])
    assert not installed & ENGINE, f"the operator image contains {sorted(installed & ENGINE)}, which it never imports"


def test_the_image_runs_as_a_non_root_user(image_name, images, engine, image_facts):
    user = (image_config(engine, images[image_name]).get("User") or "").split(":")
    assert user[0].isdigit() and int(user[0]) != 0, f"{image_name}: USER {user!r} is not a numeric non-root user"
    facts = image_facts(image_name)
    assert facts["uid"] != 0 and facts["gid"] != 0, f"{image_name} runs as uid {facts['uid']} gid {facts['gid']}"


def test_no_compiler_in_the_image(image_name, image_facts):
    assert image_facts(image_name)["compilers"] == [], f"{image_name} contains a compiler or linker"


def test_no_pip_cache_in_the_image(image_name, image_facts):
    assert image_facts(image_name)["pip_caches"] == [], f"{image_name} contains a pip cache"


def test_no_test_dependency_in_the_image(image_name, image_facts):
    installed = set(image_facts(image_name)["distributions"])
    assert not installed & TEST_ONLY, f"{image_name} contains test/demo dependencies {sorted(installed & TEST_ONLY)}"
    assert "mmsearch" in installed, f"{image_name} does not contain mmsearch itself"
    if image_name in ONLINE:
        assert not installed & TORCH, f"the online image {image_name} contains {sorted(installed & TORCH)}"


def test_a_pod_runs_with_what_its_security_context_says(engine, images, tmp_path):
    """The kubelet stand-in is strict: read-only root, only the mounts writable, the pod's user and groups,
    no capabilities, no privilege escalation (so the other image tests cannot pass on a laxer runtime)."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    tmp.chmod(0o777)
    script = ("grep -E '^(CapEff|NoNewPrivs)' /proc/self/status; id -u; id -G; "
              "touch /opt/mmsearch/x 2>/dev/null || echo root-is-read-only; "
              "touch /var/cache/mmsearch/x 2>/dev/null || echo cache-is-read-only; "
              "touch /tmp/x && echo tmp-is-writable")
    spec = ContainerSpec(name="security", image=images["services"], command=["sh", "-c", script], user=10001,
                         group=10001, groups=(10002,), read_only=True, mounts=[Mount(tmp, "/tmp")])
    code, output = run_to_end(engine, spec, tmp_path / "logs", timeout=60)
    assert code == 0, output
    lines = output.split()
    assert "CapEff:\t0000000000000000" in output and "NoNewPrivs:\t1" in output, output
    assert lines[4:7] == ["10001", "10001", "10002"], output
    assert {"root-is-read-only", "cache-is-read-only", "tmp-is-writable"} <= set(lines), output
    assert (tmp / "x").stat().st_uid == 10001
