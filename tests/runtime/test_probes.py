"""The kubelet's probes on the metrics port (/healthz, /readyz): what the chart probes when a service port
serves TLS, which the kubelet's gRPC probe cannot speak."""
from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request

import grpc
import pytest

from mmsearch.services.runtime.metrics import probe_answer
from mmsearch.services.runtime.server import start_server
from mmsearch.services.runtime.settings import GrpcSettings
from tests.support.certs import Ca, write_pair


def no_services(server: grpc.aio.Server) -> list[str]:
    return []


def get(port: int, path: str) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a plain HTTP GET on the metrics port."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


@pytest.fixture
async def tls_server(tmp_path):
    files = write_pair(tmp_path / "tls", Ca.make("probe test CA").leaf())
    settings = GrpcSettings(host="127.0.0.1", port=0, metrics_host="127.0.0.1", metrics_port=0, log_json=False,
                            tls=files.settings(client_auth=True))
    running = await start_server(settings, no_services, serving=False)
    yield running
    await running.stop(0)


async def test_a_tls_server_is_probed_in_plain_http_on_its_metrics_port(tls_server):
    port = tls_server.metrics_port
    assert (await asyncio.to_thread(get, port, "/healthz"))[:2] == (200, {"status": "alive"})
    status, body, headers = await asyncio.to_thread(get, port, "/readyz")
    assert (status, body) == (503, {"status": "not ready"})
    assert headers["Content-Type"] == "application/json" and headers["Cache-Control"] == "no-store"
    await tls_server.set_serving(True)
    assert (await asyncio.to_thread(get, port, "/readyz"))[:2] == (200, {"status": "ready"})
    await tls_server.set_serving(False)
    assert (await asyncio.to_thread(get, port, "/readyz"))[:2] == (503, {"status": "not ready"})
    # /metrics is still there, on the same port
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        assert b"mmsearch_grpc_requests_total" in response.read()


async def test_a_wedged_event_loop_is_not_alive(tls_server):
    """The gRPC probe was answered by the event loop; so are these: a loop that runs nothing is 503."""
    port = tls_server.metrics_port
    answers: list = []
    done = threading.Event()

    def ask() -> None:
        answers.extend([get(port, "/healthz")[:2], get(port, "/readyz")[:2]])
        done.set()

    threading.Thread(target=ask, daemon=True).start()
    assert done.wait(timeout=30), "the probes did not answer while the loop was blocked"  # blocks the loop
    assert answers == [(503, {"status": "not alive"}), (503, {"status": "not alive"})]
    assert (await asyncio.to_thread(get, port, "/healthz"))[:2] == (200, {"status": "alive"})


@pytest.mark.parametrize(("path", "probe", "answer"), [
    ("/healthz", None, (200, "alive")),
    ("/readyz", None, (200, "ready")),
    ("/readyz", lambda: True, (200, "ready")),
    ("/readyz", lambda: False, (503, "not ready")),
    ("/healthz", lambda: False, (200, "alive")),
    ("/healthz", lambda: 1 / 0, (503, "not alive")),
    ("/readyz", lambda: 1 / 0, (503, "not alive")),
    ("/metrics", lambda: 1 / 0, None),
    ("/healthz/x", None, None),
])
def test_probe_answers(path, probe, answer):
    assert probe_answer(path, probe) == answer
