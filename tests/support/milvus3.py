"""milvus-lite 3.x as a Milvus server with native aliases (Milvus Lite 2.5.1, our engine, has none).

milvus-lite 3.x needs pymilvus 3 (it imports ``pymilvus.grpc_gen`` without declaring it), which
conflicts with our ``pymilvus<2.6``, so it lives in a virtual environment of its own, created on
first use under ``.cache/milvus-lite-3`` (ignored by git; reused afterwards; pip needs the package
index once). :class:`MilvusLite3Server` runs ``milvus-lite server --data-dir D --host 127.0.0.1
--port P`` from it; our pymilvus 2.5 client talks to it over gRPC like to any Milvus server.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from mmsearch.dev.processes import free_port
from tests.support.processes import stop_process, wait_listening

ROOT = Path(__file__).resolve().parents[2]
VENV = ROOT / ".cache" / "milvus-lite-3"
PACKAGES = ("milvus-lite==3.2.2", "pymilvus==3.0.2")


def ensure_venv(venv: Path = VENV) -> Path:
    """The ``milvus-lite`` executable of the environment (created and installed when missing)."""
    exe = venv / "bin" / "milvus-lite"
    marker = venv / ".installed"
    if marker.is_file() and marker.read_text() == " ".join(PACKAGES) and exe.is_file():
        return exe
    subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)], check=True, capture_output=True)
    result = subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install", "-qq", *PACKAGES],
                            capture_output=True, text=True, timeout=900)
    if result.returncode != 0:
        raise RuntimeError(f"cannot install {' '.join(PACKAGES)} into {venv}: {result.stderr[-2000:]}")
    marker.write_text(" ".join(PACKAGES))
    return exe


class MilvusLite3Server:
    def __init__(self, data_dir: Path):
        self.data_dir, self.port, self.process = data_dir, free_port(), None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        exe = ensure_venv()
        self.log = open(self.data_dir.parent / f"milvus-lite-3-{self.port}.log", "wb")
        self.process = subprocess.Popen([str(exe), "server", "--data-dir", str(self.data_dir), "--host", "127.0.0.1",
                                         "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env={**os.environ, "PYTHONPATH": ""})
        wait_listening(self.process, self.port, "milvus-lite server", timeout)

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None
        self.log.close()
