"""The operator's install is what the operator imports: ``mmsearch operator`` starts on the base
dependencies and the ``operator`` extra alone, so its image carries none of the engine (numpy,
onnxruntime, pymilvus, pandas, ...). Checked on the real import graph of a fresh interpreter."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

from tests.operator.helpers import ROOT

# What `mmsearch operator` imports before kopf takes over: the console script (its `job` group is loaded
# only when named), the command, the operator's handlers.
PROGRAM = """
import importlib.metadata as md, json, sys
from typer.testing import CliRunner
from mmsearch.cli import app
result = CliRunner().invoke(app, ["operator", "--help"])
assert result.exit_code == 0, result.output
import mmsearch.operator.main, mmsearch.operator.handlers
owners = md.packages_distributions()
print(json.dumps(sorted({d for m in list(sys.modules) for d in owners.get(m.split(".")[0], [])})))
"""
ENGINE = {"numpy", "onnxruntime", "pymilvus", "milvus-lite", "pandas", "tokenizers", "pillow", "boto3", "grpcio",
          "protobuf"}

# Imported when present, never required: setuptools' .pth hook (_distutils_hack) loads in every interpreter
# of a venv that has setuptools; aiohttp uses brotli or aiodns if they are installed.
OPTIONAL = {"setuptools", "brotli", "brotlicffi", "aiodns"}


def _canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def _operator_install() -> set[str]:
    """The distributions `pip install mmsearch[operator]` installs: the closure of the base dependencies and
    the extra, from the installed metadata (docker/freeze_constraints.py walks it the same way)."""
    spec = importlib.util.spec_from_file_location("freeze_constraints", ROOT / "docker" / "freeze_constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return set(module.closure("mmsearch", ("operator",)))


def test_the_operator_imports_only_what_its_extra_installs():
    out = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    imported = {_canonical(d) for d in json.loads(out.stdout)}
    assert not imported & ENGINE, f"the operator imports the engine's {sorted(imported & ENGINE)}"
    outside = imported - _operator_install() - OPTIONAL
    assert not outside, f"the operator imports {sorted(outside)}, which the operator extra does not install"


def test_the_operator_install_has_none_of_the_engine():
    assert not _operator_install() & ENGINE
