"""Summary documents from the MongoDB-wire store: one ``$in`` lookup per page.

Uses pymongo's ``AsyncMongoClient`` (it works unchanged against secantusd and
MongoDB). Documents are keyed by ``_id`` = the vector id (push-mongo's
contract). The page order is preserved; ids without a document are dropped
and counted. Errors are serving's backend errors: ``Unavailable`` when the
store cannot be reached, ``TimeoutError`` when the lookup overruns its share,
``Mismatch`` when the store refuses it.

Decisions (issue 13: serving jammed for good after the store restarted under
load):
- pymongo's coroutines are never cancelled. On Python 3.11 pymongo waits for
  the topology in ``asyncio.wait_for(condition.wait(), ...)``; a cancellation
  that lands while that wait_for is handling its own timeout (our stage
  timeout and the RPC's own cancellation at the client's deadline arrive
  together) leaves the topology lock acquired for good: every later server
  selection (and ``close()``) then waits forever, and the next one to try
  raises ``RuntimeError: Lock is not acquired``. So every call runs in a task
  of its own, bounded by ``pymongo.timeout`` (which bounds server selection,
  the round trip and the query), and the caller waits for it through
  ``asyncio.shield``: a caller that gives up leaves the task to end at its own
  timeout.
- A client that breaks anyway is rebuilt: an unexpected exception (not a
  ``PyMongoError``) from pymongo, or a call that outlives its timeout by
  :data:`STUCK_AFTER_S` (seen by the health probe's ping), replaces the client
  with a fresh one; the old one is closed in the background, never awaited on
  the request path. Serving thus recovers by itself within a probe interval
  after the store is back.
- ``close()`` is bounded too (:data:`CLOSE_TIMEOUT_S`): stopping serving
  never waits on a broken client.
"""
from __future__ import annotations

import asyncio
import logging
import math
import time
from typing import Any, Hashable, Sequence

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from mmsearch.core.redact import redact
from services.serving.errors import Mismatch, Unavailable

log = logging.getLogger(__name__)


def order_documents(ids: Sequence[int], docs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any] | None], int]:
    """Documents in ``ids`` order (None where missing) and the number missing. Pure."""
    by_id = {doc.get("_id"): doc for doc in docs}
    ordered = [by_id.get(int(i)) for i in ids]
    return ordered, sum(doc is None for doc in ordered)


def plain(value: Any) -> Any:
    """A JSON-compatible value for a protobuf Struct (ObjectId, dates, bytes -> str; NaN -> None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


STUCK_AFTER_S = 2.0    # a call this long past its own pymongo.timeout: the client is jammed
CLOSE_TIMEOUT_S = 2.0  # the longest wait for a client to close


class SummaryStore:
    def __init__(self, uri: str, *, server_selection_timeout_s: float = 1.0):
        self.uri = uri
        self._shown = redact(uri)
        self._timeout = server_selection_timeout_s
        self._client: AsyncMongoClient = self._new_client()
        self._tasks: set[asyncio.Task] = set()  # calls under way (each ends at its own timeout)
        self.rebuilt = 0  # how many times a broken client was replaced

    def _new_client(self) -> AsyncMongoClient:
        ms = int(self._timeout * 1000)
        return AsyncMongoClient(self.uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, tz_aware=True)

    def _rebuild(self, broken: AsyncMongoClient, why: str) -> None:
        """Replace ``broken`` (if it is still the current client) and close it in the background."""
        if broken is not self._client:
            return
        log.warning("rebuilding the summary store client", extra={"store": self._shown, "reason": why})
        self._client = self._new_client()
        self.rebuilt += 1
        self._spawn(self._close(broken))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up never sees it

    async def _call(self, op, timeout: float):
        """``op(client)`` in a task of its own under ``pymongo.timeout(timeout)``; never cancelled by our caller."""
        client = self._client

        async def run():
            with pymongo.timeout(timeout):
                return await op(client)

        task = self._spawn(run())
        task.started, task.timeout, task.client = time.monotonic(), timeout, client  # type: ignore[attr-defined]
        try:
            return await asyncio.shield(task)
        except (PyMongoError, asyncio.CancelledError):
            raise
        except Exception as exc:  # pymongo's internal state broke: never again on this client
            self._rebuild(client, f"{type(exc).__name__}: {exc}")
            raise Unavailable(f"the store at {self._shown} failed ({type(exc).__name__}: {exc}); "
                              "its client was rebuilt") from None

    def _check_stuck(self) -> None:
        now = time.monotonic()
        for task in list(self._tasks):
            started = getattr(task, "started", None)
            if started is not None and now - started > task.timeout + STUCK_AFTER_S:  # type: ignore[attr-defined]
                self._rebuild(task.client, f"a call has been waiting {now - started:.1f}s "  # type: ignore[attr-defined]
                                           f"past its {task.timeout:.1f}s timeout")  # type: ignore[attr-defined]

    async def lookup(self, database: str, collection: str, ids: Sequence[int], fields: Sequence[str] | None,
                     timeout: float, *, version: Hashable = None) -> tuple[list[dict[str, Any] | None], int]:
        """(documents in ``ids`` order with None for missing, missing count); ``version`` is for caches."""
        if not len(ids):
            return [], 0
        projection = {name: 1 for name in fields} if fields is not None else None
        query = {"_id": {"$in": [int(i) for i in ids]}}
        try:
            docs = await self._call(lambda client: client[database][collection].find(query, projection).to_list(None),
                                    timeout)
        except ExecutionTimeout as exc:
            raise TimeoutError(f"the lookup exceeded {timeout * 1000:.0f} ms: {redact(str(exc))}") from None
        except ConnectionFailure as exc:
            raise Unavailable(f"the store at {self._shown} is unreachable: {_short(exc)}") from None
        except PyMongoError as exc:
            raise Mismatch(f"lookup in {database}.{collection} failed: {_short(exc)}") from None
        return order_documents(ids, docs)

    async def ping(self, timeout: float | None = None) -> None:
        """Raise :class:`Unavailable` unless the store answers; rebuild the client if a call is stuck."""
        self._check_stuck()
        timeout = self._timeout if timeout is None else timeout
        try:
            await self._call(lambda client: client.admin.command("ping"), timeout)
        except PyMongoError as exc:
            raise Unavailable(f"the store at {self._shown} is unreachable: {_short(exc)}") from None

    @staticmethod
    async def _close(client: AsyncMongoClient) -> None:
        """Close ``client`` within CLOSE_TIMEOUT_S (asyncio.wait: a close stuck on a broken lock is left)."""
        closing = asyncio.ensure_future(client.close())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if not done or closing.exception() is not None:
            log.warning("the summary store client did not close cleanly",
                        extra={"error": repr(closing.exception()) if done else "timed out"})

    async def close(self) -> None:
        """Close the client and let the calls under way end (never cancelled), within CLOSE_TIMEOUT_S."""
        calls = set(self._tasks)
        closing = asyncio.ensure_future(self._client.close())
        done, _ = await asyncio.wait({closing, *calls}, timeout=CLOSE_TIMEOUT_S)
        if closing not in done or closing.exception() is not None:
            log.warning("the summary store client did not close cleanly",
                        extra={"error": repr(closing.exception()) if closing in done else "timed out"})


def _short(exc: BaseException) -> str:
    """pymongo's message without its topology dump, credentials redacted."""
    text = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return redact(" ".join(text.split())[:300])
