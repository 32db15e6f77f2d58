"""A real S3 endpoint for the export-area tests: moto's threaded server on 127.0.0.1, port 0.

Import the fixtures into a test module (``from tests.jobs.moto_s3 import s3_endpoint, unused_port``).
"""
from __future__ import annotations

import socket

import pytest


@pytest.fixture(scope="session")
def s3_endpoint(tmp_path_factory) -> str:
    """URL of a moto S3 server (any AWS keys work); stopped at the end of the session."""
    import os

    from moto.server import ThreadedMotoServer

    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture()
def unused_port() -> int:
    """A port nothing listens on (bound then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
