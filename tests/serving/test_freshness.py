"""Live writes evict their ids from serving's summary cache (keyed by collection and generation only):
the pure plan of a round, the cache's evictions and the fill that lands across one (dropped), and rounds
against a real write log in a real secantusd."""
from __future__ import annotations

import asyncio

import pymongo
import pytest

from mmsearch.core.writelog import Entry, WriteLog
from mmsearch.dev.mongo import start_mongo
from mmsearch.services.serving.backends.summary import SummaryStore
from mmsearch.services.serving.backends.summary_cache import SummaryCache, fill_holds, served_collection
from mmsearch.services.serving.pipeline.freshness import Freshness, observed, plan


class Documents:
    """Summary documents in memory, by id; a lookup waits on ``gate`` when one is set (a read under way)."""

    def __init__(self, docs: dict[int, dict]):
        self.docs, self.gate, self.reads = docs, None, 0

    async def lookup(self, database, collection, ids, fields, timeout, *, version=None):
        self.reads += 1
        found = [dict(self.docs[i]) if i in self.docs else None for i in ids]  # read now, as a store would
        if self.gate is not None:
            await self.gate.wait()
        return found, sum(d is None for d in found)

    async def ping(self):
        pass

    async def close(self):
        pass


def texts(docs) -> list:
    return [d and d["text"] for d in docs]


def test_a_round_reads_the_ids_written_between_the_positions_it_saw_and_forgets_what_it_cannot_know():
    records = {"docs": {"collection": "docs_2", "scene": "docs", "writes": 7}, "pics": {"collection": "pics_1"},
               "other": {"version": "1"}}
    assert observed(records) == {"docs_2": ("docs", 7), "pics_1": ("", 0)}
    now = {"a_1": ("a", 9), "b_1": ("b", 4), "c_1": ("c", 3), "d_1": ("d", 2), "e_1": ("", 5)}
    reads, forget = plan({"a_1": 5, "b_1": 4, "c_1": 6, "e_1": 1}, now)
    assert reads == {"a_1": ("a", 5, 9)}  # moved: the entries in (5, 9]; b_1 did not move
    assert forget == {"c_1", "d_1", "e_1"}  # went back, first seen, moved with no scene to read the log of
    assert plan({}, {}) == ({}, set())


def test_the_cache_keys_on_the_concrete_collection_and_a_fill_holds_only_without_an_eviction_meanwhile():
    assert served_collection(("docs_2", 3)) == "docs_2" and served_collection("docs_2") == "docs_2"
    assert fill_holds(4, 4) and not fill_holds(4, 5)


async def test_an_eviction_drops_the_written_ids_of_that_collection_only():
    store = Documents({i: {"_id": i, "text": f"v1 {i}"} for i in range(1, 6)})
    cache = SummaryCache(store, max_documents=100)
    for version in (("docs_1", 0), ("docs_2", 0)):
        await cache.lookup("db", "c", [1, 2, 3], None, 1.0, version=version)
        await cache.lookup("db", "c", [1, 2], ["text"], 1.0, version=version)
    assert len(cache) == 10 and store.reads == 4
    store.docs[2] = {"_id": 2, "text": "v2 2"}
    assert cache.evict("docs_2", [2, 9]) == 2  # both field sets of id 2; 9 was never cached
    assert cache.evict("docs_2", []) == 0
    docs, _ = await cache.lookup("db", "c", [1, 2, 3], None, 1.0, version=("docs_2", 0))
    assert texts(docs) == ["v1 1", "v2 2", "v1 3"] and store.reads == 5  # only 2 was read again
    docs, _ = await cache.lookup("db", "c", [1, 2, 3], None, 1.0, version=("docs_1", 0))
    assert texts(docs) == ["v1 1", "v1 2", "v1 3"] and store.reads == 5  # another collection keeps its own
    assert cache.forget("docs_1") == 5 and len(cache) == 4  # docs_2: 1, 2, 3 and the text of 1
    await cache.lookup("db", "c", [1, 2, 3], None, 1.0, version=("docs_2", 0))
    assert store.reads == 5


async def test_a_fill_read_before_an_eviction_is_not_kept():
    store = Documents({1: {"_id": 1, "text": "old"}, 2: {"_id": 2, "text": "two"}})
    cache = SummaryCache(store, max_documents=100)
    store.gate = asyncio.Event()
    reading = asyncio.create_task(cache.lookup("db", "c", [1, 2], None, 1.0, version=("docs_1", 0)))
    while store.reads < 1:  # the read has been made: it holds the old document
        await asyncio.sleep(0)
    store.docs[1] = {"_id": 1, "text": "new"}  # the write lands, the round evicts its id
    cache.evict("docs_1", [1])
    store.gate.set()
    docs, _ = await reading
    assert texts(docs) == ["old", "two"]  # this page was read before the write: served as read, not kept
    assert len(cache) == 0
    store.gate = None
    docs, _ = await cache.lookup("db", "c", [1, 2], None, 1.0, version=("docs_1", 0))
    assert texts(docs) == ["new", "two"] and len(cache) == 2 and store.reads == 2
    docs, _ = await cache.lookup("db", "c", [1, 2], None, 1.0, version=("docs_1", 0))
    assert texts(docs) == ["new", "two"] and store.reads == 2


async def test_a_log_that_cannot_be_read_drops_the_collections_entries():
    cache = SummaryCache(Documents({1: {"_id": 1, "text": "one"}}), max_documents=100)  # it reads no log
    freshness = Freshness("log", timeout=1.0)
    records = lambda position: {"docs": {"collection": "docs_1", "scene": "docs", "writes": position}}  # noqa: E731
    await freshness.round(records(3), cache)
    await cache.lookup("db", "c", [1], None, 1.0, version=("docs_1", 0))
    await freshness.round(records(3), cache)
    assert len(cache) == 1
    await freshness.round(records(4), cache)
    assert len(cache) == 0 and freshness.seen == {"docs_1": 4}


@pytest.fixture(scope="module")
def mongo():
    with start_mongo(timeout=60) as running:
        yield running


async def test_rounds_against_the_real_write_log_evict_exactly_the_ids_written(mongo):
    client = pymongo.MongoClient(mongo.uri)
    log = WriteLog(client, "fresh_log")
    summaries = client["fresh"]["docs_1"]
    summaries.insert_many([{"_id": i, "text": f"v1 {i}"} for i in range(1, 8)])
    cache = SummaryCache(SummaryStore(mongo.uri, server_selection_timeout_s=5.0), max_documents=100)
    freshness = Freshness("fresh_log", timeout=5.0, max_ids=3)
    version = ("docs_1", 0)
    records = lambda position: {"docs": {"collection": "docs_1", "scene": "docs", "writes": position}}  # noqa: E731

    async def page() -> list:
        docs, _ = await cache.lookup("fresh", "docs_1", list(range(1, 8)), None, 5.0, version=version)
        return texts(docs)

    try:
        await freshness.round(records(0), cache)  # first sight: nothing of unknown age is kept
        assert await page() == [f"v1 {i}" for i in range(1, 8)] and len(cache) == 7

        def write(scene: str, ids: list[int]) -> int:
            first = log.reserve(len(ids))
            log.append([Entry(first + k, scene, "upsert", i) for k, i in enumerate(ids)])
            for i in ids:
                summaries.replace_one({"_id": i}, {"_id": i, "text": f"{scene} {first}"}, upsert=True)
            return first + len(ids) - 1

        write("pics", [1, 2])  # another scene's writes: not this collection's
        position = write("docs", [3, 3, 5])
        await freshness.round(records(position), cache)
        assert freshness.evicted == 2 and len(cache) == 5  # ids 3 and 5 (3 written twice)
        assert await page() == ["v1 1", "v1 2", f"docs {position - 2}", "v1 4", f"docs {position - 2}", "v1 6",
                                "v1 7"]
        await freshness.round(records(position), cache)  # nothing moved
        assert freshness.evicted == 2
        position = write("docs", [1, 2, 4, 6])  # more entries than a round reads: the collection is forgotten
        await freshness.round(records(position), cache)
        assert len(cache) == 0 and freshness.evicted == 9
        assert (await page())[0] == f"docs {position - 3}"
    finally:
        await cache.close()
        client.close()
