"""The client installed alone: a fresh virtual environment, the wheel built from this repository with only
its ``client`` extra (grpcio and protobuf; pip fetches them from the package index), nothing of the engine;
every example of docs/client.md runs there against a real stack (keys on; the image example on an image scene)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.client.examples import examples
from tests.serving.test_e2e_t2i import image_site, t2i_stack  # noqa: F401  (the image scene's fixtures)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ENGINE = {"onnxruntime", "pymilvus", "milvus-lite", "numpy", "pillow", "tokenizers", "aiohttp", "pymongo",
          "tritonclient", "boto3", "torch", "pandas", "prometheus-client", "grpcio-health-checking"}
# The distributions whose modules importing the client loads (the interpreter's own start aside).
IMPORTS = """
import sys
before = set(sys.modules)
import mmsearch.client
import importlib.metadata, json
owners = importlib.metadata.packages_distributions()
loaded = {m.split(".")[0] for m in set(sys.modules) - before}
print(json.dumps(sorted({d.lower().replace("-", "_") for m in loaded for d in owners.get(m, [])})))
"""
CLIENT_DISTRIBUTIONS = {"mmsearch", "grpcio", "protobuf", "typing_extensions"}  # the last: grpcio's own


def _run(*args, env=None, timeout=600) -> str:
    done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)
    assert done.returncode == 0, f"{args}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def client_venv(tmp_path_factory) -> Path:
    """A fresh virtual environment holding ``mmsearch[client]`` from a wheel of this checkout."""
    root = tmp_path_factory.mktemp("client-venv")
    _run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "--wheel-dir",
         str(root / "wheels"), str(ROOT))
    (wheel,) = (root / "wheels").glob("mmsearch-*.whl")
    _run(sys.executable, "-m", "venv", str(root / "venv"))
    python = root / "venv" / "bin" / "python"
    _run(str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", f"{wheel}[client]")
    return python


def test_the_client_extra_installs_nothing_of_the_engine(client_venv):
    installed = {p["name"].lower() for p in json.loads(_run(str(client_venv), "-m", "pip", "list", "--format",
                                                            "json", "--disable-pip-version-check"))}
    assert {"grpcio", "protobuf", "mmsearch"} <= installed
    assert not installed & ENGINE, installed & ENGINE
    loaded = set(json.loads(_run(str(client_venv), "-c", IMPORTS)))
    assert {"mmsearch", "grpcio", "protobuf"} <= loaded <= CLIENT_DISTRIBUTIONS, loaded


def test_the_documented_examples_run_installed(client_venv, keyed_stack, t2i_stack):  # noqa: F811
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    keyed = {**base, "MMSEARCH_ADDRESS": keyed_stack.addresses, "MMSEARCH_SCENE": keyed_stack.scene,
             "MMSEARCH_API_KEY": keyed_stack.keys["full"]}
    image = next(iter(sorted(t2i_stack.extra["folder"].glob("*.png"))))
    images = {**base, "MMSEARCH_ADDRESS": t2i_stack.address, "MMSEARCH_IMAGE_SCENE": "t2i",
              "MMSEARCH_IMAGE": str(image)}
    scripts = examples()
    assert {"text", "filters", "pages", "similar", "image", "feedback", "errors", "async"} <= set(scripts)
    for name, code in scripts.items():
        out = _run(str(client_venv), "-c", code, env=images if name == "image" else keyed, timeout=120)
        assert out.strip(), f"example {name} printed nothing"
