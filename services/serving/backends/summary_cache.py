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
rewrites many documents of a live collection in place, bumps the generation when its
writes are done (:mod:`mmsearch.jobs.sync`: a sync that changed nothing leaves it);
serving's route watcher reads it with the alias on each round
(:mod:`mmsearch.services.serving.pipeline.routes`, every ``MMSEARCH_HEALTH_INTERVAL_SECONDS``),
and from then on every key is new, so nothing cached before the change is
served again (entries of old versions age out of the LRU). Live writes (the
writer, :mod:`mmsearch.services.writer`) change a few ids at a time, so they are
not part of the key (the whole cache would turn over at every round under a
write load): the watcher reads which ids were written since its last round and
:meth:`SummaryCache.evict` drops those ids' entries
(:mod:`mmsearch.services.serving.pipeline.freshness`); a fill whose store read
started before an eviction in its collection is not kept (it may hold the
document as it was before the write), only returned. Between the write
and the watcher's next round a page may still show a document as it was (at
most one interval). Writing documents of a live collection in place by other
means (e.g. re-running push-mongo into it) is not seen: use sync or the writer; a lookup
without a version is not cached.

Decisions:
- Keys are (database, collection, fields, version, id): one document per
  entry, so pages that share documents share entries. A version is a tuple
  whose first item is the concrete Milvus collection (what evictions name). The bound is a number
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
from typing import Any, Hashable, Iterable, Sequence

from prometheus_client import Counter

HITS = Counter("mmsearch_serving_summary_cache_hits_total",
               "Summary documents served from serving's cache, by summary collection.", ["collection"])
MISSES = Counter("mmsearch_serving_summary_cache_misses_total",
                 "Summary documents not in serving's cache (read from the store), by summary collection.",
                 ["collection"])


def served_collection(version: Hashable) -> Hashable:
    """The concrete collection a lookup's ``version`` names (its first item when it is a tuple). Pure."""
    return version[0] if isinstance(version, tuple) and version else version


def fill_holds(evictions_at_start: int, evictions_now: int) -> bool:
    """Whether documents read from the store may be kept: no eviction in their collection happened while they
    were read (one may have dropped an id the read had already seen as it was). Pure."""
    return evictions_at_start == evictions_now


class SummaryCache:
    """The summary store behind a bounded per-version LRU (see module doc)."""

    def __init__(self, store: Any, max_documents: int):
        if max_documents < 0:
            raise ValueError(f"max_documents must be >= 0, got {max_documents}")
        self.store = store
        self.max_documents = max_documents
        self._docs: OrderedDict[tuple, dict[str, Any]] = OrderedDict()
        self._counters: dict[str, tuple[Any, Any]] = {}
        self._keys: dict[tuple[Hashable, int], set[tuple]] = {}  # (concrete collection, id) -> its entries' keys
        self._evictions: dict[Hashable, int] = {}  # concrete collection -> evictions so far (fills check it)

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
        served = served_collection(version)
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
        started = self._evictions.get(served, 0)
        found, _ = await self.store.lookup(database, collection, wanted, fields, timeout)
        keep = fill_holds(started, self._evictions.get(served, 0))
        by_id = {}
        for i, doc in zip(wanted, found):
            if doc is not None:
                by_id[i] = doc
                if keep:
                    self._put((scope, i), served, doc)
        while len(docs) > self.max_documents:
            self._drop(next(iter(docs)))
        missing = 0
        for position, i in enumerate(ids):
            if out[position] is None:
                out[position] = by_id.get(i)
                missing += out[position] is None
        return out, missing

    def _put(self, key: tuple, served: Hashable, doc: dict[str, Any]) -> None:
        self._docs[key] = doc
        self._keys.setdefault((served, key[1]), set()).add(key)

    def _drop(self, key: tuple) -> None:
        self._docs.pop(key, None)
        item = (served_collection(key[0][3]), key[1])
        keys = self._keys.get(item)
        if keys is not None:
            keys.discard(key)
            if not keys:
                del self._keys[item]

    def evict(self, served: Hashable, ids: Iterable[int]) -> int:
        """Drop the entries of ``ids`` in concrete collection ``served`` (their documents were written), and
        keep no fill under way there (it may have read them before the write). Returns the entries dropped."""
        ids = list(ids)
        if not ids:
            return 0
        self._evictions[served] = self._evictions.get(served, 0) + 1
        dropped = 0
        for i in ids:
            for key in list(self._keys.get((served, int(i)), ())):
                self._drop(key)
                dropped += 1
        return dropped

    def forget(self, served: Hashable) -> int:
        """Drop every entry of concrete collection ``served`` (which ids changed is not known), as
        :meth:`evict` does. Returns the entries dropped."""
        ids = {i for (collection, i) in self._keys if collection == served}
        return self.evict(served, ids)

    async def written(self, database: str, scene: str, after: int, upto: int, limit: int,
                      timeout: float) -> list[int] | None:
        """The store's :meth:`~mmsearch.services.serving.backends.summary.SummaryStore.written`."""
        return await self.store.written(database, scene, after, upto, limit, timeout)

    async def ping(self) -> None:
        await self.store.ping()

    async def close(self) -> None:
        self._docs.clear()
        self._keys.clear()
        await self.store.close()
