"""Vector matching on Milvus (a Milvus Lite file or a Milvus server URI).

pymilvus is blocking, so every call runs in the service's I/O thread pool.
The client is created lazily and re-created after a failure to connect, so
serving starts (NOT_SERVING) with Milvus down and recovers when it is back.
A search returns ids and scores; the candidates' vectors too when the ranker
needs them (MMR). Errors: :class:`MatchUnavailable` when Milvus cannot be
reached, :class:`MatchError` for a request Milvus refuses (unknown
collection, bad search params).
"""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np


class MatchUnavailable(RuntimeError):
    """Milvus cannot be reached."""


class MatchError(RuntimeError):
    """Milvus refused the search (collection missing, bad params)."""


@dataclass(frozen=True)
class Matches:
    ids: np.ndarray            # int64 [n]
    scores: np.ndarray         # float32 [n]
    vectors: np.ndarray | None  # float32 [n, d]


_UNAVAILABLE_HINTS = ("unavailable", "connect", "deadline", "timeout", "timed out", "closed", "socket", "refused")


def _short(exc: BaseException) -> str:
    message = getattr(exc, "message", None) or str(exc)
    text = " ".join(str(message).split())
    return text[:300] + ("..." if len(text) > 300 else "")


def _is_unavailable(exc: Exception) -> bool:
    from pymilvus.exceptions import MilvusUnavailableException

    if isinstance(exc, (MilvusUnavailableException, ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(hint in text for hint in _UNAVAILABLE_HINTS)


class MilvusMatcher:
    def __init__(self, uri: str, executor: Executor, *, token: str = "", connect_timeout_s: float = 1.0):
        self.uri = uri
        self._token = token
        self._executor = executor
        self._connect_timeout_s = connect_timeout_s
        self._client = None
        self._lite = not uri.startswith(("http://", "https://", "tcp://", "grpc://", "unix:"))
        self._lock = threading.Lock()
        # Manifest reads and pings (health probes) run on their own thread: when Milvus hangs they
        # queue there instead of taking the search threads.
        self._admin = ThreadPoolExecutor(1, thread_name_prefix="milvus-admin")

    def _get_client(self):
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                try:
                    self._client = MilvusClient(uri=self.uri, token=self._token, timeout=self._connect_timeout_s)
                except Exception as exc:
                    raise MatchUnavailable(f"Milvus at {self.uri} is unreachable: {exc}") from None
            return self._client

    def _drop_client(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception:
                pass

    def _call(self, method: str, *args, **kwargs):
        """One pymilvus call without pymilvus's own retries (``retry_times=0``).

        pymilvus honours ``timeout`` as a retry limit only when it is an int; a
        float timeout means 75 retries with back-off, i.e. minutes of hanging
        while Milvus is down. Without retries an unreachable server fails at
        once, which is what the pipeline wants (it reports UNAVAILABLE).
        """
        client = self._get_client()
        try:
            return getattr(client, method)(*args, retry_times=0, **kwargs)
        except Exception as exc:
            if _is_unavailable(exc):
                if not self._lite:
                    # A fresh channel connects at once when the server is back; the old one would
                    # wait out gRPC's reconnect back-off (up to 2 minutes; pymilvus sets no cap).
                    self._drop_client()
                raise MatchUnavailable(f"Milvus at {self.uri}: {_short(exc)}") from None
            raise MatchError(f"Milvus {method}: {_short(exc)}") from None

    def _search(self, collection: str, vector: np.ndarray, limit: int, metric: str,
                params: Mapping[str, Any], with_vectors: bool, timeout: float) -> Matches:
        hits = self._call(
            "search",
            collection_name=collection,
            data=[np.asarray(vector, dtype=np.float32).tolist()],
            limit=limit,
            anns_field="vector",
            search_params={"metric_type": metric, "params": dict(params)},
            output_fields=["vector"] if with_vectors else [],
            timeout=timeout,
        )[0]
        ids = np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits))
        vectors = None
        if with_vectors:
            vectors = np.asarray([h["entity"]["vector"] for h in hits], dtype=np.float32).reshape(len(hits), -1)
        return Matches(ids, scores, vectors)

    async def search(self, collection: str, vector: np.ndarray, limit: int, *, metric: str = "IP",
                     params: Mapping[str, Any] | None = None, with_vectors: bool = False,
                     timeout: float = 1.0) -> Matches:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(
            self._executor, self._search, collection, vector, limit, metric, params or {}, with_vectors, timeout
        )

    def _manifest(self, collection: str) -> dict:
        from jobs.milvus_store import read_manifest

        self._call("list_collections", timeout=self._connect_timeout_s)  # fail fast: read_manifest retries
        client = self._get_client()
        try:
            return read_manifest(client, collection)
        except Exception as exc:
            if _is_unavailable(exc):
                raise MatchUnavailable(f"Milvus at {self.uri}: {exc}") from None
            raise MatchError(f"cannot read the model manifest of collection {collection!r}: {exc}") from None

    async def manifest(self, collection: str) -> dict:
        """The manifest of the exported model that built ``collection`` (or alias)."""
        return await asyncio.get_running_loop().run_in_executor(self._admin, self._manifest, collection)

    def _ping(self, timeout: float) -> None:
        self._call("list_collections", timeout=timeout)

    async def ping(self, timeout: float = 1.0) -> None:
        """Raise :class:`MatchUnavailable` unless Milvus answers."""
        await asyncio.get_running_loop().run_in_executor(self._admin, self._ping, timeout)

    def close(self) -> None:
        self._admin.shutdown(wait=False, cancel_futures=True)
        self._drop_client()
