"""`mmsearch serve web` as a real process: port from its log, health, bad settings, SIGTERM."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import requests

from mmsearch.dev.processes import free_port


def start_web(**env: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "mmsearch.cli", "serve", "web"],
        env={**os.environ, "MMSEARCH_HOST": "127.0.0.1", "MMSEARCH_PORT": "0", **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )


def started_port(proc: subprocess.Popen, timeout: float = 30) -> int:
    """The port from the JSON log line 'web server started'."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            raise AssertionError(f"web exited early with code {proc.wait(5)}")
        record = json.loads(line)
        if record["message"] == "web server started":
            return record["port"]
    raise AssertionError("no 'web server started' log line")


def test_serve_web_process_and_sigterm():
    proc = start_web(MMSEARCH_SERVING_ADDRESS=f"127.0.0.1:{free_port()}", MMSEARCH_GRACE_SECONDS="1")
    try:
        port = started_port(proc)
        assert requests.get(f"http://127.0.0.1:{port}/healthz", timeout=10).json() == {"status": "ok"}
        assert requests.get(f"http://127.0.0.1:{port}/readyz", timeout=10).status_code == 503
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(20) == 0
        assert "shutting down" in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_bad_setting_names_the_variable():
    proc = start_web(MMSEARCH_REQUEST_TIMEOUT_SECONDS="soon")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert "MMSEARCH_REQUEST_TIMEOUT_SECONDS" in err and "soon" in err
