"""The `helm test` hook's command, run for real against a gRPC health server on 127.0.0.1."""
from __future__ import annotations

import subprocess
import sys
from concurrent import futures

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from tests.chart import charttools as ct

SERVICE = "mmsearch.v1.RetrievalService"


@pytest.fixture
def health_server():
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    servicer = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield f"127.0.0.1:{port}", servicer
    server.stop(None)


def _hook_command() -> list[str]:
    (pod,) = [m for m in ct.manifests("default") if m.kind == "Pod"]
    assert pod.doc["metadata"]["annotations"]["helm.sh/hook"] == "test"
    (container,) = pod.doc["spec"]["containers"]
    return container["command"]


def _run(command: list[str], target: str) -> subprocess.CompletedProcess:
    assert command[0] == "python"
    argv = [sys.executable, *command[1:]]
    argv[argv.index("rel-mmsearch-serving:50052")] = target
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def test_hook_checks_serving_retrieval_service_health(health_server):
    target, servicer = health_server
    command = _hook_command()
    assert command[-2:] == ["rel-mmsearch-serving:50052", SERVICE]
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.SERVING)
    ok = _run(command, target)
    assert ok.returncode == 0, ok.stderr
    assert f"{SERVICE}: SERVING" in ok.stdout
    servicer.set(SERVICE, health_pb2.HealthCheckResponse.NOT_SERVING)
    down = _run(command, target)
    assert down.returncode == 1 and "NOT_SERVING" in down.stdout


def test_hook_fails_when_serving_is_unreachable(health_server):
    target, _ = health_server
    host, port = target.rsplit(":", 1)
    # A port nothing listens on: bind one, close it.
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free = s.getsockname()[1]
    result = _run(_hook_command(), f"127.0.0.1:{free}")
    assert result.returncode != 0
    assert "UNAVAILABLE" in result.stderr
