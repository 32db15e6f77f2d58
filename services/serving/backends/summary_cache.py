"""A bounded LRU of summary documents in front of the summary store, per versioned collection.

:class:`SummaryCache` wraps any :class:`~mmsearch.services.serving.backends.bundle.SummaryLookup`
(the MongoDB-wire :class:`~mmsearch.services.serving.backends.summary.SummaryStore` in serving)
with the same ``lookup``; a lookup asks the store only for the ids it does not
hold (one ``$in`` of the misses, none when every id is cached).

Why it is exact: a lookup names the ``version`` of the documents it wants: the
concrete Milvus collection the page came from (``<scene>_<version>``, what an
alias resolves to) and that collection's *generation*, a counter kept in its
state (``generation`` of :func:`mmsearch.core.milvus.record.read_manifest`). A
full rebuild is a new collection; ``mmsearch job sync``, the one stage that
changes documents of a live collection in place, bumps the generation when its
writes are done (:mod:`mmsearch.jobs.sync`: a sync that changed nothing leaves it);
serving's route watcher reads it with the alias on each round
(:mod:`mmsearch.services.serving.pipeline.routes`, every ``MMSEARCH_HEALTH_INTERVAL_SECONDS``),
and from then on every key is new, so nothing cached before the change is
served again (entries of old versions age out of the LRU). Between the write
and the watcher's next round a page may still show a document as it was (at
most one interval). Writing documents of a live collection in place by other
means (e.g. re-running push-mongo into it) is not seen: use sync; a lookup
without a version is not cached.

Decisions:
- Keys are (database, collection, fields, version, id): one document per
  entry, so pages that share documents share entries. The bound is a number
  of documents (``MMSEARCH_SUMMARY_CACHE_DOCUMENTS``; 0 turns the cache off).
- Ids the store does not have are not cached (a document pushed after its
  vector is found on a later request).
- Failures are the store's: a lookup whose misses cannot be read fails as it
  would without the cache; a page wholly in the cache is served while the
  store is down.
- Counters ``mmsearch_serving_summary_cache_hits_total`` and ``..._misses_total``
  count documents, by summary collection (``database.collection``).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Hashable, Sequence

from prometheus_client import Counter

HITS = Counter("mmsearch_serving_summary_cache_hits_total",
               "Summary documents served from serving's cache, by summary collection.", ["collection"])
MISSES = Counter("mmsearch_serving_summary_cache_misses_total",
                 "Summary documents not in serving's cache (read from the store), by summary collection.",
                 ["collection"])


class SummaryCache:
    """The summary store behind a bounded per-version LRU (see module doc)."""

    def __init__(self, store: Any, max_documents: int):
        if max_documents < 0:
            raise ValueError(f"max_documents must be >= 0, got {max_documents}")
        self.store = store
        self.max_documents = max_documents
        self._docs: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._counters: dict[str, tuple[Any, Any]] = {}

    def __len__(self) -> int:
        return len(self._docs)

    def _count(self, database: str, collection: str, hits: int, misses: int) -> None:
        name = f"{database}.{collection}"
        counters = self._counters.get(name)
        if counters is None:
            counters = self._counters[name] = (HITS.labels(name), MISSES.labels(name))
        if hits:
            counters[0].inc(hits)
        if misses:
            counters[1].inc(misses)

    async def lookup(self, database: str, collection: str, ids: Sequence[int], fields: Sequence[str] | None,
                     timeout: float, *, version: Hashable = None) -> tuple[list[dict[str, Any] | None], int]:
        """(documents in ``ids`` order with None for missing, missing count), as the store answers."""
        if version is None or not self.max_documents:
            return await self.store.lookup(database, collection, ids, fields, timeout)
        scope = (database, collection, None if fields is None else tuple(fields), version)
        docs = self._docs
        out: list[dict[str, Any] | None] = []
        wanted: list[int] = []
        for i in ids:
            doc = docs.get((scope, i))
            if doc is None:
                wanted.append(i)
            else:
                docs.move_to_end((scope, i))
            out.append(doc)
        self._count(database, collection, len(out) - len(wanted), len(wanted))
        if not wanted:
            return out, 0
        found, _ = await self.store.lookup(database, collection, wanted, fields, timeout)
        by_id = {}
        for i, doc in zip(wanted, found):
            if doc is not None:
                by_id[i] = doc
                docs[(scope, i)] = doc
        while len(docs) > self.max_documents:
            docs.popitem(last=False)
        missing = 0
        for position, i in enumerate(ids):
            if out[position] is None:
                out[position] = by_id.get(i)
                missing += out[position] is None
        return out, missing

    async def ping(self) -> None:
        await self.store.ping()

    async def close(self) -> None:
        self._docs.clear()
        await self.store.close()
