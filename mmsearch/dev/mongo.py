"""Embedded backends for a laptop, the demo and the tests, as real local processes.

- MongoDB: a ``secantusd-py`` server (SecantusDB, a MongoDB-wire server on
  WiredTiger, pinned in pyproject) on 127.0.0.1, so the same pymongo code runs
  as against a MongoDB server. :func:`start_mongo` starts it on an ephemeral
  port (port 0; the real port is read from its log line "listening on
  HOST:PORT"), waits until it answers ``ping`` (bounded by ``timeout``), and
  stops it on :meth:`EmbeddedMongo.stop`, at interpreter exit, and (Linux) when
  the starting process dies (PR_SET_PDEATHSIG), so no server outlives its owner.
- Milvus: Milvus Lite needs no process of ours: a file path as the Milvus URI
  (pymilvus starts and stops the engine itself).
"""
from __future__ import annotations

import atexit
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

_LISTENING = re.compile(r"listening on (\S+):(\d+)")


class EmbeddedError(RuntimeError):
    """An embedded backend could not be started."""


def _with_parent_death_signal(argv: list[str]) -> list[str]:
    """Prefix ``argv`` with util-linux's ``setpriv --pdeathsig TERM`` where it exists, so the
    server gets SIGTERM if its parent dies. (Not a ``preexec_fn``: running Python between fork
    and exec in a process with gRPC's threads crashed the child, seen here as exit -6.)"""
    setpriv = shutil.which("setpriv") if sys.platform.startswith("linux") else None
    return [setpriv, "--pdeathsig", "TERM", *argv] if setpriv else argv


def secantusd_executable() -> str:
    """``secantusd-py`` beside this interpreter (a venv) or on PATH."""
    beside = Path(sys.executable).parent / "secantusd-py"
    if beside.exists():
        return str(beside)
    found = shutil.which("secantusd-py")
    if not found:
        raise EmbeddedError("secantusd-py not found: pip install secantusdb (the embedded MongoDB-wire server)")
    return found


def secantusd_command(host: str, port: int, storage_path: str | os.PathLike) -> list[str]:
    """The argv that runs secantusd on ``host:port`` with data in ``storage_path`` (or ``:memory:``)."""
    return [secantusd_executable(), "--host", host, "--port", str(port), "--storage-path", str(storage_path)]


class EmbeddedMongo:
    """A running secantusd; ``uri`` is ``mongodb://127.0.0.1:PORT``. Use as a context manager."""

    def __init__(self, process: subprocess.Popen, host: str, port: int, log_path: Path, workdir: Path | None):
        self.process = process
        self.host = host
        self.port = port
        self.log_path = log_path
        self._workdir = workdir
        atexit.register(self.stop)

    @property
    def uri(self) -> str:
        return f"mongodb://{self.host}:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout`` seconds; idempotent."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None
        atexit.unregister(self.stop)

    def kill(self) -> None:
        """SIGKILL (a crash: no clean shutdown of its storage); the data folder is kept."""
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(5)
        atexit.unregister(self.stop)

    def __enter__(self) -> "EmbeddedMongo":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def _log_tail(path: Path, n: int = 5) -> str:
    try:
        return " | ".join(path.read_text(errors="replace").strip().splitlines()[-n:])
    except OSError:
        return ""


def start_mongo(storage_path: str | os.PathLike = ":memory:", *, host: str = "127.0.0.1", port: int = 0,
                timeout: float = 30.0, log_path: str | os.PathLike | None = None) -> EmbeddedMongo:
    """Start secantusd on ``host:port`` (0 = ephemeral) with data in ``storage_path``
    (a folder, kept across restarts, or ``:memory:``) and wait until it answers ping."""
    import pymongo

    workdir = None
    if log_path is None:
        workdir = Path(tempfile.mkdtemp(prefix="mmsearch-mongo-"))
        log_path = workdir / "secantusd.log"
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    if str(storage_path) != ":memory:":
        Path(storage_path).mkdir(parents=True, exist_ok=True)
    with open(log_path, "ab") as log:
        offset = log.tell()  # the log is appended across restarts: read only this process's lines
        process = subprocess.Popen(
            _with_parent_death_signal(secantusd_command(host, port, storage_path)),
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    deadline = time.monotonic() + timeout
    found_port = None  # from *this* process's log line, so another server on the port is never mistaken for it
    try:
        while time.monotonic() < deadline:
            if process.poll() is not None:
                raise EmbeddedError(f"secantusd exited with code {process.returncode}: {_log_tail(log_path)}")
            if found_port is None:
                with open(log_path, "rb") as log:
                    log.seek(offset)
                    match = _LISTENING.search(log.read().decode(errors="replace"))
                if match:
                    found_port = int(match.group(2))
            if found_port is not None and process.poll() is None:
                client = pymongo.MongoClient(host, found_port, serverSelectionTimeoutMS=500, connectTimeoutMS=500)
                try:
                    client.admin.command("ping")
                    return EmbeddedMongo(process, host, found_port, log_path, workdir)
                except pymongo.errors.PyMongoError:
                    pass
                finally:
                    client.close()
            time.sleep(0.1)
        raise EmbeddedError(f"secantusd did not answer ping within {timeout:.0f}s: {_log_tail(log_path)}")
    except BaseException:
        process.kill()
        process.wait(5)
        if workdir is not None:
            shutil.rmtree(workdir, ignore_errors=True)
        raise
