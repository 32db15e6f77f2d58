"""Opening and closing a Milvus client, and the one-line errors every other module raises.

A file path is Milvus Lite, ``http(s)://``, ``tcp://``, ``grpc://`` or ``unix:``
a Milvus server (:func:`is_lite`). One process at a time may open a Milvus
Lite file (it holds a file lock); a second one is refused with a clear error.
"""
from __future__ import annotations

import contextlib
import importlib.util
import logging
import re
import threading
import uuid
import warnings
from pathlib import Path
from typing import Iterator

from mmsearch.core.errors import MmsearchError
from mmsearch.core.redact import redact

_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")

# Milvus Lite engines that connect() started, with how many of its clients are open on each: close()
# stops an engine only when its last one closes, and never one somebody else in this process started
# (a serving matcher on the same file keeps its engine while a job stage runs in-process beside it).
_started: dict[str, int] = {}
_started_lock = threading.Lock()


class MilvusStoreError(MmsearchError):
    """A Milvus collection/alias problem the caller can fix; or Milvus is unreachable."""


def is_lite(uri: str) -> bool:
    """True when ``uri`` names a Milvus Lite file rather than a server."""
    return not str(uri).startswith(_SERVER_SCHEMES)


def connect(uri: str, *, token: str = "", timeout: float = 10.0):
    """A ``MilvusClient`` for ``uri``; MilvusStoreError with one clear line when it cannot open."""
    from pymilvus import MilvusClient

    if is_lite(uri):
        path = Path(uri)
        if not re.match(r"^[a-zA-Z0-9.\-_]+$", path.name) or len(path.name) > 36:
            raise MilvusStoreError(f"--milvus-uri {uri}: a Milvus Lite file name must match [a-zA-Z0-9.-_]+ "
                                   "and be at most 36 characters (e.g. ./data/milvus.db)")
        if not path.parent.is_dir():
            raise MilvusStoreError(f"--milvus-uri {uri}: folder {path.parent} does not exist")
        if importlib.util.find_spec("milvus_lite") is None:
            raise MilvusStoreError(f"--milvus-uri {uri}: Milvus Lite is not installed here (the services image "
                                   "leaves it out); use a Milvus server URI such as http://milvus:19530")
    # Job output stays one clear line: pymilvus logs every failed RPC (and the UNIMPLEMENTED
    # alias probes on Lite) at ERROR.
    for name in ("pymilvus", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    # A connection alias of its own: pymilvus otherwise keys connections by uri, and closing one
    # client would disconnect every other client of this process on that uri.
    def open_client():
        return MilvusClient(uri=str(uri), token=token, timeout=timeout, alias=f"mmsearch-{uuid.uuid4().hex}")

    try:
        if not is_lite(uri):
            return open_client()
        servers = _lite_servers()  # imported here first, so pymilvus finds it imported
        key = _engine_key(uri)
        with _started_lock:
            if key in _started or key not in servers._servers:
                client = open_client()
                _started[key] = _started.get(key, 0) + 1
                return client
        return open_client()
    except Exception as exc:
        if is_lite(uri):
            raise MilvusStoreError(f"cannot open Milvus Lite database {uri} (is another process using it? "
                                   f"only one may open a Lite file at a time): {short_error(exc)}") from None
        raise MilvusStoreError(f"cannot reach Milvus at {redact(uri)}: {short_error(exc)}") from None


def close(client, uri: str) -> None:
    """Close ``client`` from :func:`connect`; for Milvus Lite also stop the engine, so another process
    can open the file (pymilvus otherwise keeps it, and its file lock, until this process exits), once
    the last client connect() opened on an engine it started is closed. An engine started elsewhere
    in this process (serving's matcher) is left running for its owner."""
    client.close()
    if not is_lite(uri):
        return
    key = _engine_key(uri)
    with _started_lock:
        if key not in _started:
            return
        _started[key] -= 1
        if _started[key] > 0:
            return
        del _started[key]
        servers = _lite_servers()
        if key in servers._servers:
            servers.release_server(uri)


def _engine_key(uri: str) -> str:
    """The name Milvus Lite's engine manager keys a file's engine by."""
    return str(Path(uri).absolute().resolve())


def _lite_servers():
    """Milvus Lite's engine manager. milvus_lite 2.5.1 (the last 2.x; 3.x is a slower engine) imports
    setuptools' deprecated pkg_resources for nothing but its own version string, which warns once per
    process; the one import of milvus_lite in mmsearch is this one, and that warning alone is dropped
    here, where it is raised, rather than in every caller or test run."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"pkg_resources is deprecated", category=UserWarning)
        from milvus_lite.server_manager import server_manager_instance
    return server_manager_instance


@contextlib.contextmanager
def session(uri: str, doing: str, *, token: str = "", timeout: float = 10.0) -> Iterator:
    """A client for ``uri``, released at the end (the Lite file too). A pymilvus failure inside
    (a server going away, a refused request) becomes one MilvusStoreError line: Milvus at URI failed DOING."""
    client = connect(uri, token=token, timeout=timeout)
    try:
        yield client
    except MmsearchError:
        raise
    except Exception as exc:
        raise MilvusStoreError(f"Milvus at {redact(uri)} failed {doing}: {short_error(exc)}") from None
    finally:
        close(client, uri)


def short_error(exc: BaseException) -> str:
    """One line of at most 300 characters describing ``exc`` (pymilvus exceptions: their message; gRPC
    errors: their details, never the debug string of internal locations), with any credentials in quoted
    URIs redacted."""
    details, code = getattr(exc, "details", None), getattr(exc, "code", None)
    if callable(details) and callable(code):  # a gRPC error: never its debug string of internal locations
        said = details() or getattr(code(), "name", type(exc).__name__)
    else:
        said = getattr(exc, "message", None) or exc
    text = redact(" ".join(str(said).split()))
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def unimplemented(exc: BaseException) -> bool:
    """Whether ``exc`` is the engine's UNIMPLEMENTED answer (Milvus Lite 2.5 to every alias call)."""
    return "UNIMPLEMENTED" in str(exc).upper()


def ensure_loaded(client, name: str) -> None:
    """Load ``name`` unless it is loaded (searches and queries need a loaded collection)."""
    state = client.get_load_state(name).get("state")
    if "Loaded" not in str(state):
        client.load_collection(name)
