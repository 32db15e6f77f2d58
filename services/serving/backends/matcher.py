"""Vector matching on Milvus (a Milvus Lite file or a Milvus server URI).

Searches go through pymilvus's ``AsyncMilvusClient`` (grpc.aio on the
event loop): measured against Milvus Lite's engine, one search takes well
under half the time of the blocking client called through a thread pool (the thread hand-off and the blocking gRPC call's polling cost
more than the search). Manifest reads and health pings, which reuse the
offline jobs' blocking helpers, keep the blocking client on a thread of
their own. Concurrent searches of the same shape (collection, limit, metric,
params, whether vectors are wanted) are combined by a
:class:`mmsearch.services.serving.backends.batching.MicroBatcher` into one Milvus search with
several query vectors: one round trip and one pass of pymilvus's per-call
Python work for the lot. A lone search is sent at once. Both clients are
created lazily and re-created after a failure to connect, so serving starts
(NOT_SERVING) with Milvus down and recovers when it is back.
A search returns ids and scores; the candidates' vectors too when the ranker
needs them (MMR), and the values of ``output_fields`` (facets). Besides
vector search: :meth:`MilvusMatcher.text_search` (BM25 on the collection's
``sparse`` field, with the raw query text) and :meth:`MilvusMatcher.vector`
(an item's stored vector, for more like this). A filtered search (a
compiled expression) is sent on its own, unbatched.
Consistency: every search and item query asks for :data:`CONSISTENCY`,
``Bounded``: the query node serves at once from what it holds, missing only
writes younger than the server's ``common.gracefulTime``. With that set to
1000 ms on the Milvus server (its default is 5000), a live write is seen by
search within a second without a search ever waiting; ``Strong`` would make
every search wait for the next time tick (up to ``proxy.timeTickInterval``,
200 ms) to see writes it rarely needs, and ``Session`` only covers the
client's own writes (the writer is another process). The Milvus Lite engine
shows a write as soon as it returns, whatever the level.
Errors (serving's backend errors): ``Unavailable`` when Milvus cannot be
reached, ``Mismatch`` for a request Milvus refuses (unknown collection, bad
search params), ``NotFound`` for an unknown item.
"""
from __future__ import annotations

import asyncio
import json
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Mapping, Sequence

import numpy as np

from mmsearch.core.fields import SPARSE_FIELD
from mmsearch.core.milvus.connection import ensure_loaded, is_lite, short_error
from mmsearch.core.milvus.record import read_manifest
from mmsearch.core.milvus.search import Found, Matches, matches, search_request
from mmsearch.core.redact import redact
from mmsearch.services.runtime import tracing
from mmsearch.services.serving.backends.batching import MicroBatcher
from mmsearch.services.serving.errors import Mismatch, NotFound, Unavailable
from mmsearch.services.serving.metrics import BATCH_SIZE

__all__ = ["Found", "Matches", "MilvusMatcher"]

CONSISTENCY = "Bounded"  # see the module doc: visibility within common.gracefulTime, no wait
_UNAVAILABLE_HINTS = ("unavailable", "connect", "deadline", "timeout", "timed out", "closed", "socket", "refused")


def _is_unavailable(exc: Exception) -> bool:
    from pymilvus.exceptions import MilvusUnavailableException

    if isinstance(exc, (MilvusUnavailableException, ConnectionError, TimeoutError)):
        return True
    text = f"{type(exc).__name__} {exc}".lower()
    return any(hint in text for hint in _UNAVAILABLE_HINTS)


class MilvusMatcher:
    def __init__(self, uri: str, *, token: str = "", connect_timeout_s: float = 1.0,
                 batch_max_size: int = 64, in_flight: int = 2):
        self.uri = uri
        self._shown = redact(uri)  # the URI in messages: never its credentials
        self._batch_max_size = batch_max_size
        self._in_flight = in_flight
        self._batchers: dict[tuple, MicroBatcher] = {}
        self._token = token
        self._connect_timeout_s = connect_timeout_s
        self._client = None  # blocking MilvusClient: manifests and pings, on the admin thread
        self._async = None   # AsyncMilvusClient: searches, on the event loop
        self._alias = f"mmsearch-matcher-{uuid.uuid4().hex}"
        self._lite = is_lite(uri)
        self._lock = threading.Lock()
        # Manifest reads and pings (health probes) run on their own thread: when Milvus hangs they
        # queue there instead of taking the search threads.
        self._admin = ThreadPoolExecutor(1, thread_name_prefix="milvus-admin")

    def _get_client(self):
        with self._lock:
            if self._client is None:
                from pymilvus import MilvusClient

                try:
                    # An alias of its own: pymilvus otherwise keys connections by uri, so closing one
                    # matcher (a serving stopped in this process) would disconnect every other on that uri.
                    self._client = MilvusClient(uri=self.uri, token=self._token, timeout=self._connect_timeout_s,
                                                alias=self._alias)
                except Exception as exc:
                    raise Unavailable(f"Milvus at {self._shown} is unreachable: {short_error(exc)}") from None
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
            error = self._failure(method, exc)
            if isinstance(error, Unavailable) and not self._lite:
                self._drop_client()
            raise error from None

    def _failure(self, method: str, exc: Exception) -> Unavailable | Mismatch:
        """The error for a failed pymilvus call: Milvus unreachable, or the request refused.

        On :class:`Unavailable` the caller drops its client (a server URI, not Lite): a fresh
        channel connects at once when the server is back; the old one would wait out gRPC's
        reconnect back-off (up to 2 minutes; pymilvus sets no cap).
        """
        if _is_unavailable(exc):
            return Unavailable(f"Milvus at {self._shown}: {short_error(exc)}")
        return Mismatch(f"Milvus {method}: {short_error(exc)}")

    async def _search_client(self):
        if self._async is None:
            from pymilvus import AsyncMilvusClient

            try:
                self._async = AsyncMilvusClient(uri=self.uri, token=self._token, timeout=self._connect_timeout_s,
                                                alias=f"{self._alias}-async")
            except Exception as exc:
                raise Unavailable(f"Milvus at {self._shown} is unreachable: {short_error(exc)}") from None
        return self._async

    async def _drop_search_client(self) -> None:
        client, self._async = self._async, None
        if client is not None:
            try:
                await client.close()
            except Exception:
                pass

    async def _search(self, collection: str, data: list, anns_field: str, limit: int, metric: str,
                      params: Mapping[str, Any], with_vectors: bool, output_fields: Sequence[str], expression: str,
                      timeout: float) -> list[Matches]:
        """One Milvus search for every query in ``data`` (vectors, or texts for BM25); one :class:`Matches` each."""
        client = await self._search_client()
        request = search_request(data, limit, metric=metric, params=params, with_vectors=with_vectors,
                                 anns_field=anns_field, output_fields=output_fields, expression=expression)
        try:
            results = await client.search(collection, timeout=timeout, consistency_level=CONSISTENCY, **request)
        except Exception as exc:
            error = self._failure("search", exc)
            if isinstance(error, Unavailable) and not self._lite:
                await self._drop_search_client()
            raise error from None
        return matches(results, with_vectors, output_fields)

    def _batcher(self, collection: str, anns_field: str, limit: int, metric: str, params: Mapping[str, Any],
                 with_vectors: bool, output_fields: tuple[str, ...]) -> MicroBatcher:
        key = (collection, anns_field, limit, metric, json.dumps(params, sort_keys=True, default=str), with_vectors,
               output_fields)
        batcher = self._batchers.get(key)
        if batcher is None:
            async def run(inputs: dict[str, np.ndarray]) -> list[Matches]:
                # One timeout for the combined search: the longest share among its requests (each
                # request still stops waiting at its own share).
                return await self._search(collection, inputs["query"].tolist(), anns_field, limit, metric, params,
                                          with_vectors, output_fields, "", float(inputs["timeout"].max()))

            batcher = self._batchers[key] = MicroBatcher(run, max_size=self._batch_max_size, in_flight=self._in_flight,
                                                         on_batch=BATCH_SIZE.labels("match", collection).observe)
        return batcher

    async def _one(self, collection: str, query: np.ndarray, anns_field: str, limit: int, metric: str,
                   params: Mapping[str, Any], with_vectors: bool, output_fields: Sequence[str], expression: str,
                   timeout: float) -> Matches:
        """An unfiltered search through its shape's batcher; a filtered one on its own (Milvus takes one filter
        per call, and a batcher per distinct filter would grow without bound)."""
        fields = tuple(output_fields)
        # The span is this request's wait for its rows, a shared call's queueing included.
        with tracing.span("milvus search", {"db.system": "milvus", "db.operation.name": "search",
                                            "db.collection.name": collection, "mmsearch.anns_field": anns_field,
                                            "mmsearch.filtered": bool(expression)}, kind="CLIENT"):
            if expression:
                rows = await self._search(collection, query.tolist(), anns_field, limit, metric, params, with_vectors,
                                          fields, expression, timeout)
                return rows[0]
            batcher = self._batcher(collection, anns_field, limit, metric, params, with_vectors, fields)
            rows = await batcher.submit({"query": query, "timeout": np.array([[timeout]])})
            return rows[0]

    async def search(self, collection: str, vector: np.ndarray, limit: int, *, metric: str = "IP",
                     params: Mapping[str, Any] | None = None, with_vectors: bool = False,
                     timeout: float = 1.0, expression: str = "", output_fields: Sequence[str] = ()) -> Matches:
        """The ``limit`` best matches of one query ``vector`` [d] that satisfy ``expression`` (a compiled
        filter, :mod:`mmsearch.services.serving.pipeline.filters`), with ``output_fields`` (batched with concurrent searches)."""
        query = np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return await self._one(collection, query, "vector", limit, metric, params or {}, with_vectors, output_fields,
                               expression, timeout)

    async def text_search(self, collection: str, text: str, limit: int, *, with_vectors: bool = False,
                          timeout: float = 1.0, expression: str = "", output_fields: Sequence[str] = ()) -> Matches:
        """The ``limit`` best BM25 matches of ``text`` (Milvus analyses it like the collection's text field)."""
        query = np.array([text], dtype=object)
        return await self._one(collection, query, SPARSE_FIELD, limit, "BM25", {}, with_vectors, output_fields,
                               expression, timeout)

    async def vector(self, collection: str, item: int, *, timeout: float = 1.0) -> np.ndarray:
        """The stored vector of item ``item``; :class:`NotFound` naming it when there is none."""
        client = await self._search_client()
        try:  # a query by primary key: one round trip (get() describes the collection first)
            with tracing.span("milvus query", {"db.system": "milvus", "db.operation.name": "query",
                                               "db.collection.name": collection}, kind="CLIENT"):
                rows = await client.query(collection, filter=f"id == {int(item)}", output_fields=["vector"], limit=1,
                                          timeout=timeout, consistency_level=CONSISTENCY)
        except Exception as exc:
            error = self._failure("query", exc)
            if isinstance(error, Unavailable) and not self._lite:
                await self._drop_search_client()
            raise error from None
        if not rows:
            raise NotFound(f"no item with id {int(item)} in collection {collection!r}: similar_to names an item "
                           "of the index being searched")
        return np.asarray(rows[0]["vector"], dtype=np.float32)

    def _manifest(self, collection: str) -> dict:
        self._call("list_collections", timeout=self._connect_timeout_s)  # fail fast: read_manifest retries
        client = self._get_client()
        try:
            return read_manifest(client, collection)
        except Exception as exc:
            if _is_unavailable(exc):
                raise Unavailable(f"Milvus at {self._shown}: {short_error(exc)}") from None
            raise Mismatch(f"cannot read the model manifest of collection {collection!r}: {short_error(exc)}") from None

    async def manifest(self, collection: str) -> dict:
        """The manifest of the exported model that built ``collection`` (or alias)."""
        return await asyncio.get_running_loop().run_in_executor(self._admin, self._manifest, collection)

    def _load(self, collection: str) -> None:
        self._call("list_collections", timeout=self._connect_timeout_s)  # fail fast when Milvus is down
        try:
            ensure_loaded(self._get_client(), collection)
        except Exception as exc:
            raise self._failure("load_collection", exc) from None

    async def warm(self, collection: str, manifest: Mapping[str, Any], timeout: float = 10.0) -> None:
        """Load ``collection`` and answer one canary query on it: a unit vector of the recorded
        dimension, the index's metric, through the search path requests take (routes move to a
        collection only after this returns)."""
        await asyncio.get_running_loop().run_in_executor(self._admin, self._load, collection)
        vector = np.zeros((1, int(manifest.get("dimension") or 1)), dtype=np.float32)
        vector[0, 0] = 1.0
        metric = (manifest.get("index") or {}).get("metric") or manifest.get("metric") or "IP"
        await self._search(collection, vector.tolist(), "vector", 1, metric, {}, False, (), "", timeout)

    async def collection_names(self, timeout: float = 1.0) -> list[str]:
        """The names of every collection Milvus holds (versions being built included)."""
        return list(await asyncio.get_running_loop().run_in_executor(
            self._admin, lambda: self._call("list_collections", timeout=timeout)))

    def _ping(self, timeout: float) -> None:
        self._call("list_collections", timeout=timeout)

    async def ping(self, timeout: float = 1.0) -> None:
        """Raise :class:`Unavailable` unless Milvus answers."""
        await asyncio.get_running_loop().run_in_executor(self._admin, self._ping, timeout)

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
        self._admin.shutdown(wait=False, cancel_futures=True)
        await self._drop_search_client()
        self._drop_client()
