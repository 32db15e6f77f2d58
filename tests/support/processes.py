"""Run a real ``mmsearch serve <name>`` process on ephemeral ports and read its ports from its logs.

Services log ``gRPC server started`` with ``port`` and ``metrics_port`` (JSON
lines on stderr); the helper waits for that line, so tests never guess ports.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from tests.support.loops import eventually

MMSEARCH = str(Path(sys.executable).with_name("mmsearch"))


@dataclass
class ServiceProcess:
    proc: subprocess.Popen
    port: int = 0
    metrics_port: int | None = None
    logs: list[dict] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def messages(self) -> list[str]:
        return [record.get("message", "") for record in self.logs]

    def stop(self, timeout: float = 15) -> int:
        """SIGTERM, then wait (kill on timeout); the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        return self.proc.returncode


def start_service(name: str, env: dict[str, str], timeout: float = 60) -> ServiceProcess:
    """Start ``mmsearch serve NAME`` on 127.0.0.1 port 0 and return once its port (gRPC, or web's HTTP) is bound."""
    full_env = {**os.environ, "MMSEARCH_HOST": "127.0.0.1", "MMSEARCH_PORT": "0",
                "MMSEARCH_METRICS_HOST": "127.0.0.1", "MMSEARCH_METRICS_PORT": "0",
                "MMSEARCH_LOG_JSON": "true", "MMSEARCH_ANONYMOUS_SCENES": "*", **env}
    proc = subprocess.Popen([MMSEARCH, "serve", name], env=full_env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    service = ServiceProcess(proc)
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            service.lines.append(line.rstrip("\n"))
            try:
                record = json.loads(line)
            except ValueError:
                continue
            service.logs.append(record)
            if record.get("message") in ("gRPC server started", "web server started"):
                service.port, service.metrics_port = int(record["port"]), record.get("metrics_port")
                started.set()
        started.set()  # the process ended

    threading.Thread(target=read, daemon=True).start()
    if not started.wait(timeout) or not service.port:
        service.stop()
        raise RuntimeError(f"mmsearch serve {name} did not start within {timeout}s; stderr:\n"
                           + "\n".join(service.lines[-30:]))
    return service


class Lines:
    """The lines of a process's stream, read by a daemon thread as they come: a test polls ``lines`` with
    :func:`~tests.support.loops.eventually` (a blocking ``readline`` cannot time out)."""

    def __init__(self, stream) -> None:
        self.lines: list[str] = []
        self.closed = False  # the stream ended (the process closed it or exited)
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream) -> None:
        for line in stream:
            self.lines.append(line.rstrip("\n"))
        self.closed = True

    def text(self, timeout: float = 10) -> str:
        """Everything read, once the stream has ended (waits up to ``timeout`` for that)."""
        self._thread.join(timeout)
        return "\n".join(self.lines)


def wait_listening(process: subprocess.Popen, port: int, what: str, timeout: float = 60) -> None:
    """Block until something listens on 127.0.0.1:``port``; AssertionError if ``process`` exits first."""
    def listening() -> bool:
        assert process.poll() is None, f"{what} exited with {process.returncode}"
        with socket.socket() as s:
            return s.connect_ex(("127.0.0.1", port)) == 0
    eventually(listening, f"{what} listening on port {port}", timeout=timeout, interval=0.1)


def stop_process(process: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then wait (kill on timeout)."""
    if process is not None and process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(5)


def wait_serving(target: str, timeout: float = 60, credentials: grpc.ChannelCredentials | None = None) -> None:
    """Poll grpc.health.v1 until the server answers SERVING (:class:`NotReached`, a TimeoutError, if not);
    ``credentials``: of a TLS port."""
    with (grpc.insecure_channel(target) if credentials is None else grpc.secure_channel(target, credentials)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        eventually(lambda: stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                   == health_pb2.HealthCheckResponse.SERVING, f"{target} reporting SERVING", timeout=timeout,
                   interval=0.1, retry=(grpc.RpcError,))
