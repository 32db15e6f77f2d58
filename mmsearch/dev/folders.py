"""A folder served over HTTP on a local address: the demo's image folder, and tests' image sites.

``with serve_folder(folder, prefix="/images/") as base_url`` serves the files
of ``folder`` under ``base_url`` (port 0 picks a free one) from a thread and
stops when the block ends. Only that folder is served, nothing above it.
"""
from __future__ import annotations

import contextlib
import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlparse


class _Quiet(SimpleHTTPRequestHandler):
    prefix = "/"

    def translate_path(self, path: str) -> str:
        return super().translate_path("/" + urlparse(path).path.removeprefix(self.prefix))

    def log_message(self, *args) -> None:
        pass


@contextlib.contextmanager
def serve_folder(folder: str | Path, *, host: str = "127.0.0.1", port: int = 0, prefix: str = "/") -> Iterator[str]:
    """Serve ``folder`` at ``http://host:port{prefix}``; yields that base URL (see module doc)."""
    handler = type("FolderHandler", (_Quiet,), {"prefix": prefix})
    server = ThreadingHTTPServer((host, port), functools.partial(handler, directory=str(folder)))
    thread = threading.Thread(target=server.serve_forever, name="folder-server", daemon=True)
    thread.start()
    try:
        yield f"http://{host}:{server.server_address[1]}{prefix}"
    finally:
        server.shutdown()
        server.server_close()
