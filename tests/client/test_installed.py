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
IMPORTS = """
import json, sys
import mmsearch.client
loaded = {name.split(".")[0] for name in sys.modules}
print(json.dumps(sorted(loaded - set(sys.stdlib_module_names) - {"mmsearch", "grpc", "google"})))
"""


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
    stray = [m for m in json.loads(_run(str(client_venv), "-c", IMPORTS)) if not m.startswith("_")]
    assert stray == [], f"importing mmsearch.client loaded {stray}"


def test_the_documented_examples_run_installed(client_venv, keyed_stack, t2i_stack):  # noqa: F811
    base = {k: v for k, v in os.environ.items() if not k.startswith("MMSEARCH_")}
    keyed = {**base, "MMSEARCH_ADDRESS": keyed_stack.addresses, "MMSEARCH_SCENE": keyed_stack.scene,
             "MMSEARCH_API_KEY": keyed_stack.keys["full"]}
    image = next(iter(sorted(t2i_stack.extra["folder"].glob("*.png"))))
    images = {**base, "MMSEARCH_ADDRESS": t2i_stack.address, "MMSEARCH_IMAGE_SCENE": "t2i", "MMSEARCH_IMAGE": str(image)}
    scripts = examples()
    assert {"text", "filters", "pages", "similar", "image", "feedback", "errors", "async"} <= set(scripts)
    for name, code in scripts.items():
        out = _run(str(client_venv), "-c", code, env=images if name == "image" else keyed, timeout=120)
        assert out.strip(), f"example {name} printed nothing"
