"""`mmsearch serve web` as a real process: port from its log, health, bad settings, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys

import requests

from mmsearch.dev.processes import free_port
from tests.support.loops import eventually
from tests.support.processes import Lines


def start_web(**env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmsearch.cli", "serve", "web"],
        env={**os.environ, "MMSEARCH_HOST": "127.0.0.1", "MMSEARCH_PORT": "0", "MMSEARCH_METRICS_PORT": "0", **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def started_port(proc: subprocess.Popen, log: Lines, timeout: float = 30) -> int:
    """The port from the JSON log line 'web server started'."""
    def port() -> int | None:
        ended = log.closed
        for line in list(log.lines):
            record = json.loads(line)
            if record["message"] == "web server started":
                return record["port"]
        assert not ended, f"web exited early with code {proc.wait(5)}: {log.text()[-2000:]}"
        return None
    return eventually(port, "the 'web server started' log line", timeout=timeout)


def test_serve_web_process_and_sigterm():
    proc = start_web(MMSEARCH_SERVING_ADDRESS=f"127.0.0.1:{free_port()}", MMSEARCH_GRACE_SECONDS="1")
    log = Lines(proc.stderr)
    try:
        port = started_port(proc, log)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "shutting down" in log.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_setting_names_the_variable():
    proc = start_web(MMSEARCH_REQUEST_TIMEOUT_SECONDS="soon")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "MMSEARCH_REQUEST_TIMEOUT_SECONDS" in err and "soon" in err


def test_sigterm_stops_web_within_its_grace_while_connections_hang():
    """SIGTERM while clients hang (headers never finished, a body never sent, a search whose serving is
    a network black hole that accepts connections and never answers, a client that never reads): the
    process exits within its grace period and the shutdown watchdog's slack."""
    from mmsearch.services.runtime.shutdown import EXIT_SLACK_S

    grace = 1.0
    with socket.create_server(("127.0.0.1", 0)) as black_hole:  # accepts (the kernel's backlog), never answers
        proc = start_web(MMSEARCH_SERVING_ADDRESS=f"127.0.0.1:{black_hole.getsockname()[1]}",
                         MMSEARCH_GRACE_SECONDS=str(grace), MMSEARCH_REQUEST_TIMEOUT_SECONDS="300")
        log = Lines(proc.stderr)
        clients: list[socket.socket] = []
        try:
            port = started_port(proc, log)
            for request in (b"GET /healthz HTTP/1.1\r\nHost: web\r\n",
                            b"POST /api/search HTTP/1.1\r\nHost: web\r\nContent-Type: application/json\r\n"
                            b"Content-Length: 1000\r\n\r\n{\"scene\": ",
                            b"GET /api/search?scene=t2t&q=csv HTTP/1.1\r\nHost: web\r\n\r\n"):
                client = socket.create_connection(("127.0.0.1", port), timeout=10)
                client.sendall(request)
                clients.append(client)
            client = socket.create_connection(("127.0.0.1", port), timeout=10)
            client.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
            client.sendall(b"GET /static/app.js HTTP/1.1\r\nHost: web\r\n\r\n" * 64)  # never read
            clients.append(client)
            assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).status_code == 200  # all accepted
            proc.send_signal(signal.SIGTERM)
            code = eventually(lambda: proc.poll() is not None and (proc.returncode,), "web to exit after SIGTERM",
                              timeout=grace + EXIT_SLACK_S + 5)[0]
            text = log.text()
            assert "shutting down" in text
            assert code == 0 or (code == 1 and "did not stop within the grace period" in text), (code, text[-2000:])
        finally:
            for client in clients:
                client.close()
            if proc.poll() is None:
                proc.kill()
                proc.wait()


def test_the_shutdown_watchdog_exits_a_process_whose_stop_never_ends():
    """What bounds web's (and serving's) stop when a hang outlasts aiohttp's own grace: a real process whose
    graceful stop never returns exits with code 1 once the grace period and the slack are over."""
    from mmsearch.services.runtime.shutdown import EXIT_SLACK_S

    program = ("import asyncio, logging\n"
               "from mmsearch.services.runtime.shutdown import stop_within\n"
               "logging.basicConfig()\n"
               "asyncio.run(stop_within(asyncio.Event().wait(), 0.1))\n")
    proc = subprocess.Popen([sys.executable, "-c", program], stderr=subprocess.PIPE, text=True)
    log = Lines(proc.stderr)
    try:
        code = eventually(lambda: proc.poll() is not None and (proc.returncode,), "the watchdog to exit",
                          timeout=0.1 + EXIT_SLACK_S + 10)[0]
        assert code == 1 and "did not stop within the grace period" in log.text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
