"""Live writes and the summary cache: evict the ids written since the last round, not the whole cache.

The writer (:mod:`mmsearch.services.writer`) records, in each collection's
state, the write log position it has applied (``writes`` of
:func:`mmsearch.core.milvus.record.read_manifest`); serving's route watcher
reads it with the alias every round (:mod:`mmsearch.services.serving.pipeline.routes`).
The summary cache is keyed by the concrete collection and its sync
generation only (:meth:`~mmsearch.services.serving.pipeline.activation.Active.version`),
so a write does not turn the whole cache over; instead, each round,
:class:`Freshness` compares the positions it saw last round with the ones
read now (:func:`plan`) and, for each collection whose position moved, reads
from the write log which ids the scene's entries in between named (at most
:data:`MAX_IDS`: the log's database is ``MMSEARCH_WRITER_LOG_DATABASE`` on
the summary store's MongoDB, :meth:`~mmsearch.services.serving.backends.summary.SummaryStore.written`)
and evicts them (:meth:`~mmsearch.services.serving.backends.summary_cache.SummaryCache.evict`,
which also keeps no fill that was reading meanwhile). Every entry of a
collection is dropped instead (``forget``) when which ids changed is not
known: the first round that sees the collection (what was cached before
came from reads of unknown age), a position that went back, more than
:data:`MAX_IDS` entries in between, or a log that cannot be read.

A position is recorded only after its entries are applied to both stores,
so a lookup that starts after the eviction reads the written documents: a
changed document's old summary is served at most until the round after its
write is acknowledged (``MMSEARCH_HEALTH_INTERVAL_SECONDS``).
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

log = logging.getLogger(__name__)

MAX_IDS = 10_000  # log entries read per collection and round; more: forget the collection's entries


def observed(records: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, int]]:
    """``{concrete collection: (scene, applied write log position)}`` of an Active's ``records``. Pure."""
    return {str(rec["collection"]): (str(rec.get("scene") or ""), int(rec.get("writes") or 0))
            for rec in records.values() if rec.get("collection")}


def plan(seen: Mapping[str, int], now: Mapping[str, tuple[str, int]]
         ) -> tuple[dict[str, tuple[str, int, int]], set[str]]:
    """What to evict, given the positions ``seen`` last round and the (scene, position) read ``now`` per
    collection: (``{collection: (scene, after, upto)}``, the log entries in (after, upto] whose ids to evict;
    the collections to forget wholly: first seen, gone back, or of no known scene). Pure."""
    reads: dict[str, tuple[str, int, int]] = {}
    forget: set[str] = set()
    for collection, (scene, position) in now.items():
        before = seen.get(collection)
        if before is None or position < before or (position > before and not scene):
            forget.add(collection)
        elif position > before:
            reads[collection] = (scene, before, position)
    return reads, forget


class Freshness:
    """The positions seen last round, and one round of evictions (see the module doc)."""

    def __init__(self, database: str, timeout: float, max_ids: int = MAX_IDS):
        self.database, self.timeout, self.max_ids = database, timeout, max_ids
        self.seen: dict[str, int] = {}
        self.evicted = 0  # entries dropped so far (tests read it)

    async def round(self, records: Mapping[str, Mapping[str, Any]], summary: Any) -> None:
        """Evict from ``summary`` (a cache with ``evict``/``forget``/``written``; anything else is left
        alone) what was written since the last round, by the ``records`` read this round."""
        if not getattr(summary, "max_documents", 0) or not hasattr(summary, "evict"):
            return
        now = observed(records)
        reads, forget = plan(self.seen, now)
        for collection in forget:
            self.evicted += summary.forget(collection)
        for collection, (scene, after, upto) in reads.items():
            try:
                ids = await summary.written(self.database, scene, after, upto, self.max_ids, self.timeout)
            except Exception as exc:  # not known which ids changed: drop them all
                log.warning("reading the write log of %s failed, its cached summaries are dropped: %s", scene, exc)
                ids = None
            self.evicted += summary.forget(collection) if ids is None else summary.evict(collection, ids)
        self.seen = {collection: position for collection, (_, position) in now.items()}
