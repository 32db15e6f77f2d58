"""The web service as a real server in a background thread, and helpers for calling its JSON API.

``with WebThread(web_settings(serving_address)) as web: web.url`` runs the
real aiohttp server (the same ``start_web`` that ``mmsearch serve web`` runs)
on 127.0.0.1 port 0 in its own event loop, so tests use plain blocking
clients (requests, Playwright's sync API).
"""
from __future__ import annotations

import asyncio
import io
import threading

import requests
from PIL import Image

from mmsearch.services.web.main import RunningWeb, start_web
from mmsearch.services.web.settings import WebSettings


class WebThread:
    """``with WebThread(settings) as web: web.url`` runs the real server until the block ends."""

    def __init__(self, settings: WebSettings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="web-server", daemon=True)
        self.running: RunningWeb | None = None
        self.url = ""
        self.metrics_url = ""  # the separate Prometheus /metrics server

    def __enter__(self) -> "WebThread":
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start_web(self.settings), self.loop).result(30)
        self.url = f"{'https' if self.settings.https else 'http'}://127.0.0.1:{self.running.port}"
        self.metrics_url = f"http://127.0.0.1:{self.running.metrics_port}"
        return self

    def __exit__(self, *exc) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def web_settings(serving_address: str, **overrides) -> WebSettings:
    """Settings of a test's web service. Its calls to serving get 15 s, not the 5 s default: on CI's busy machine a
    feedback call once failed (503, serving's store too slow) within the default; a test of deadlines sets its own."""
    overrides.setdefault("access", {"anonymous_scenes": "*"})
    overrides.setdefault("request_timeout_seconds", 15.0)
    return WebSettings(host="127.0.0.1", port=0, metrics_port=0, serving_address=serving_address, log_json=False,
                       grace_seconds=0.5, **overrides)


TIMEOUT = 30


def get(web: WebThread, path: str, **params) -> requests.Response:
    return requests.get(web.url + path, params=params, timeout=TIMEOUT)


def png() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (32, 32), (200, 30, 30)).save(out, "PNG")
    return out.getvalue()


def assert_error(response: requests.Response, status: int, parameter: str | None, words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["Content-Type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status
    assert error.get("parameter") == parameter
    assert words in error["message"], error["message"]
    assert error["request_id"] == response.headers["X-Request-Id"], "every error body carries the request id"
    return error
