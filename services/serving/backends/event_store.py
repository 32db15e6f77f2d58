"""The A/B event store: impressions recorded off the request path, feedback written on it.

:class:`MongoEvents` (pymongo's ``AsyncMongoClient`` through
:class:`~mmsearch.services.serving.backends.shielded_mongo.ShieldedMongo`, as the summary store: no call is
cancelled by its caller, a jammed client is rebuilt; the documents are
:mod:`mmsearch.core.events`'):

- :meth:`~MongoEvents.record` puts an impression into a bounded buffer and
  returns at once. It never waits and never fails a search: a full buffer
  drops the impression and counts it (``mmsearch_serving_impressions_dropped_total
  {reason="buffer_full"}``).
- :meth:`~MongoEvents.run` (a background task of the serving process) drains
  the buffer in batches of up to ``batch_max`` with unordered ``insert_many``,
  waiting ``flush_s`` (``MMSEARCH_IMPRESSION_FLUSH_SECONDS``) after the first
  impression of a batch unless the batch is full already: at low load one
  write per interval instead of one per search (a write per search measured a
  worse p50 at concurrency 1 against the embedded store), under load
  back-to-back full batches. A batch the store cannot take now (unreachable,
  or slower than ``MMSEARCH_DEPENDENCY_TIMEOUT_SECONDS``) is kept and retried with
  a back-off (0.1 s doubling to 5 s) while new impressions wait in the
  buffer, so an outage shorter than the buffer loses nothing and a longer one
  drops the newest impressions, counted as ``buffer_full``; pymongo
  reconnects by itself, so recording resumes without a restart. A batch the
  store refuses (an error that retrying cannot fix: authorization, validation)
  is dropped and counted as ``store_refused``. Duplicate keys (a batch retried
  after a write that did land) are not errors.
- :meth:`~MongoEvents.feedback` inserts one feedback event within the
  caller's deadline: a duplicate ``_id`` (the same event again) answers
  ``True`` (duplicate), the store down raises ``Unavailable``.
- One index per collection besides ``_id``: the TTL index on ``at``
  (``MMSEARCH_EVENTS_TTL_DAYS``), which also serves the report's time range;
  a ``(scene, at)`` index measured markedly more store CPU per impression on the
  embedded store for a report that reads a scene's impressions whole anyway.
  It is made before the first write and retried until it is; a changed TTL is
  applied to the existing index with ``collMod``.
- :meth:`~MongoEvents.close` writes what is still buffered (bounded by the
  dependency timeout) before closing the client.

:class:`mmsearch.services.serving.backends.bundle.NoEvents` is the store when ``MMSEARCH_IMPRESSIONS=false``.
"""
from __future__ import annotations

import asyncio
import logging
from typing import Any

from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, ConnectionFailure, DuplicateKeyError, OperationFailure, PyMongoError

from mmsearch.core import events as schema
from mmsearch.services.serving import metrics
from mmsearch.services.serving.errors import Mismatch, Unavailable
from mmsearch.services.serving.backends.shielded_mongo import ShieldedMongo

log = logging.getLogger(__name__)

DUPLICATE_KEY = 11000
INDEX_CONFLICTS = (85, 86)  # IndexOptionsConflict, IndexKeySpecsConflict
BACKOFF_S = (0.1, 5.0)


class MongoEvents:
    """See the module doc."""

    enabled = True

    def __init__(self, uri: str, database: str, *, ttl_days: int, buffer: int, batch_max: int = 500,
                 flush_s: float = 0.5, timeout_s: float = 1.0):
        self.uri, self.timeout_s, self.batch_max, self.ttl_days = uri, timeout_s, batch_max, ttl_days
        self.flush_s = flush_s
        self._database = database
        self._mongo = ShieldedMongo(uri, "event store", timeout_s=timeout_s)
        self._queue: asyncio.Queue[dict] = asyncio.Queue(maxsize=buffer)
        self._held: list[dict] = []  # the batch being written (kept while the store cannot take it)
        self._indexed = False
        self.problem = ""  # why the last write failed ("" while writes succeed)

    @property
    def down(self) -> str:
        """Why the last probe found the store unreachable ("" while it answers): feedback is refused at once."""
        return self._mongo.down

    # ---- impressions (off the request path) -------------------------------------------------------
    def record(self, doc: dict) -> bool:
        """Buffer one impression; False (dropped and counted) when the buffer is full. Never blocks."""
        try:
            self._queue.put_nowait(doc)
        except asyncio.QueueFull:
            metrics.IMPRESSIONS_DROPPED.labels("buffer_full").inc()
            return False
        metrics.IMPRESSIONS_BUFFERED.set(self._queue.qsize())
        return True

    def _take(self, first: dict) -> list[dict]:
        batch = [first]
        while len(batch) < self.batch_max and not self._queue.empty():
            batch.append(self._queue.get_nowait())
        metrics.IMPRESSIONS_BUFFERED.set(self._queue.qsize())
        return batch

    async def _write(self, batch: list[dict]) -> None:
        self._mongo.check_stuck()  # off the request path: the drain notices a jammed client
        await self._mongo.call(lambda client: self._insert_impressions(client, batch), self.timeout_s, probe=True)

    async def _database_ready(self, client) -> AsyncDatabase:
        """The events database of ``client``, its indexes made (once)."""
        db = client[self._database]
        if not self._indexed:
            await self._ensure_indexes(db)
        return db

    async def _insert_impressions(self, client, batch: list[dict]) -> None:
        db = await self._database_ready(client)
        try:
            await db[schema.IMPRESSIONS].insert_many(batch, ordered=False)
        except BulkWriteError as exc:
            if any(e.get("code") != DUPLICATE_KEY for e in exc.details.get("writeErrors", [])):
                raise

    async def run(self) -> None:
        """Drain the buffer forever (cancel to stop); see the module doc."""
        backoff = BACKOFF_S[0]
        while True:
            if not self._held:
                first = await self._queue.get()
                if self.flush_s > 0 and self._queue.qsize() + 1 < self.batch_max:
                    await asyncio.sleep(self.flush_s)
                self._held = self._take(first)
            try:
                await self._write(self._held)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - a store problem must never stop the drain
                problem = f"{type(exc).__name__}: {exc}"
                if not transient(exc):
                    log.error("the event store refused %d impressions, dropped: %s", len(self._held), problem)
                    metrics.IMPRESSIONS_DROPPED.labels("store_refused").inc(len(self._held))
                    self._held = []
                    continue
                if not self.problem:
                    log.warning("the event store at %s does not take impressions (%s); they wait in the buffer",
                                self._mongo.shown, problem)
                self.problem = problem
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, BACKOFF_S[1])
                continue
            metrics.IMPRESSIONS_STORED.inc(len(self._held))
            self._held = []
            if self.problem:
                log.info("impressions are recorded again", extra={"store": self._mongo.shown})
                self.problem = ""
            backoff = BACKOFF_S[0]

    async def _ensure_indexes(self, db: AsyncDatabase) -> None:
        ttl = self.ttl_days * 86400
        for name in (schema.IMPRESSIONS, schema.FEEDBACK):
            collection = db[name]
            try:
                await collection.create_index(schema.TIME_FIELD, expireAfterSeconds=ttl)
            except OperationFailure as exc:
                if exc.code not in INDEX_CONFLICTS:
                    raise
                await db.command({"collMod": name, "index": {"keyPattern": {schema.TIME_FIELD: 1},
                                                              "expireAfterSeconds": ttl}})
                log.info("event TTL changed", extra={"collection": name, "ttl_days": self.ttl_days})
        self._indexed = True

    async def ping(self, timeout: float) -> None:
        """Probe the store (the health loop's every round; it is no health dependency): while it does not
        answer, feedback is refused at once (UNAVAILABLE) instead of waiting out its deadline. Never raises."""
        try:
            await self._mongo.call(lambda client: client.admin.command("ping"), timeout, probe=True)
        except Exception:  # noqa: BLE001 - the finding is kept by the client (ShieldedMongo.down)
            pass

    # ---- feedback (on the request path, within its deadline) --------------------------------------
    async def feedback(self, doc: dict, timeout: float) -> bool:
        """Insert one feedback event; True when it was already there (a duplicate)."""
        self._mongo.check_stuck()
        try:
            await self._mongo.call(lambda client: self._insert_feedback(client, doc), timeout)
        except DuplicateKeyError:
            return True
        except PyMongoError as exc:
            if isinstance(exc, ConnectionFailure) or exc.timeout:
                raise Unavailable(f"the event store at {self._mongo.shown} is unreachable: {exc}") from None
            raise Mismatch(f"the event store refused the feedback: {exc}") from None
        return False

    async def _insert_feedback(self, client, doc: dict) -> None:
        await (await self._database_ready(client))[schema.FEEDBACK].insert_one(doc)

    async def close(self) -> None:
        """Write what is held and buffered (bounded by the timeout), then close the client."""
        pending: list[dict[str, Any]] = self._held
        self._held = []
        while not self._queue.empty():
            pending.append(self._queue.get_nowait())
        if pending:
            try:
                await asyncio.wait_for(self._write(pending), self.timeout_s * 2)
                metrics.IMPRESSIONS_STORED.inc(len(pending))
            except Exception:  # noqa: BLE001
                log.warning("%d impressions were not stored at shutdown", len(pending))
                metrics.IMPRESSIONS_DROPPED.labels("shutdown").inc(len(pending))
        await self._mongo.close()


def transient(exc: BaseException) -> bool:
    """Whether retrying a failed write may succeed: the store unreachable or slow (not a refusal)."""
    if isinstance(exc, (ConnectionFailure, TimeoutError, Unavailable)):  # Unavailable: the client was rebuilt
        return True
    return isinstance(exc, PyMongoError) and exc.timeout and not isinstance(exc, BulkWriteError)
