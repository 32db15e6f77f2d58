"""Fixtures of the web tests: real web servers on 127.0.0.1 (port 0) in a background event loop.

The web server runs in its own thread and event loop so that tests can use
plain blocking clients (requests, Playwright's sync API).
"""
from __future__ import annotations

import asyncio
import socket
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from services.web.main import RunningWeb, start_web
from services.web.settings import WebSettings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


class WebThread:
    """``with WebThread(settings) as web: web.url`` runs the real server until the block ends."""

    def __init__(self, settings: WebSettings):
        self.settings = settings
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="web-server", daemon=True)
        self.running: RunningWeb | None = None
        self.url = ""

    def __enter__(self) -> "WebThread":
        self.thread.start()
        self.running = asyncio.run_coroutine_threadsafe(start_web(self.settings), self.loop).result(30)
        self.url = f"http://127.0.0.1:{self.running.port}"
        return self

    def __exit__(self, *exc) -> None:
        if self.running is not None:
            asyncio.run_coroutine_threadsafe(self.running.stop(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def web_settings(serving_address: str, **overrides) -> WebSettings:
    return WebSettings(host="127.0.0.1", port=0, serving_address=serving_address, log_json=False,
                       grace_seconds=0.5, **overrides)


def closed_port() -> int:
    """A port nothing listens on (bound, then released): serving that is down."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass(frozen=True)
class StackScene:
    """The scene of ``search_stack`` and a query whose expected document is in its index."""

    name: str
    query: str
    expected: str
    image_query: bool = False


@pytest.fixture(scope="session")
def serving_address(search_stack) -> str:
    return search_stack


@pytest.fixture(scope="session")
def stack_scene(stdlib_index) -> StackScene:
    return StackScene(stdlib_index.scene, "write rows to a csv file", "csv.writer")


@pytest.fixture(scope="session")
def web(serving_address) -> Iterator[WebThread]:
    """The web service in front of the real serving of ``search_stack``."""
    with WebThread(web_settings(serving_address, max_upload_bytes=64 * 1024)) as server:
        yield server


@pytest.fixture(scope="session")
def web_down() -> Iterator[WebThread]:
    """A web service whose serving is down (nothing listens at its address)."""
    with WebThread(web_settings(f"127.0.0.1:{closed_port()}", request_timeout_seconds=2.0)) as server:
        yield server


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS
