"""Local processes for the demo: free ports, readiness checks, and a supervisor that stops them in order."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` now (for servers that must be told their port before they start)."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    ready: str  # grpc://host:port (health check) or an http(s) URL answering 200
    log: Path


def check_ready(target: str, timeout: float = 2.0) -> bool:
    if target.startswith("grpc://"):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target.removeprefix("grpc://")) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


def say(message: str) -> None:
    print(f"mmsearch demo: {message}", flush=True)


class Supervisor:
    """Starts processes in their own sessions (Ctrl-C reaches only the demo) and stops them in reverse order."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, service: ServiceProcess) -> subprocess.Popen:
        service.log.parent.mkdir(parents=True, exist_ok=True)
        with open(service.log, "ab") as out:
            proc = subprocess.Popen(list(service.argv), env={**os.environ, **service.env}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((service.name, proc, service.log))
        say(f"started {service.name} (pid {proc.pid}), log {service.log}")
        return proc

    def exited(self) -> tuple[str, int, Path] | None:
        for name, proc, log in self.running:
            if proc.poll() is not None:
                return name, proc.returncode, log
        return None

    def wait_ready(self, service: ServiceProcess, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dead = self.exited()
            if dead:
                name, code, log = dead
                raise SystemExit(f"error: {name} exited with code {code} during start-up; "
                                 f"last lines of {log}:\n{tail(log)}")
            if check_ready(service.ready):
                return
            time.sleep(0.25)
        raise SystemExit(f"error: {service.name} was not ready within {timeout:.0f} s "
                         f"(MMSEARCH_DEMO_STARTUP_TIMEOUT_SECONDS); last lines of {service.log}:\n{tail(service.log)}")

    def stop_all(self, grace: float = 10.0) -> None:
        while self.running:
            name, proc, _ = self.running.pop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            say(f"stopped {name} (exit code {proc.returncode})")
