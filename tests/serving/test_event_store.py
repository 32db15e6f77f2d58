"""The event store against a real MongoDB-wire server (secantusd): the buffered impression drain, the TTL
index, duplicate feedback, a full buffer, and a store that is down (drops counted, never blocking).

The tests share pytest's event loop with every other async test: the test's own reads of the store go
through pymongo's ``AsyncMongoClient`` (never a blocking client on the loop), and a drain task is
cancelled *and awaited* before the test ends, so nothing of it is left running on the loop."""
from __future__ import annotations

import asyncio
import datetime as dt
import uuid

import pytest
from pymongo import AsyncMongoClient

from mmsearch.core import events as schema
from mmsearch.dev.processes import free_port
from mmsearch.services.serving.errors import Unavailable
from mmsearch.services.serving.backends.event_store import MongoEvents
from tests.support.loops import eventually_async
from tests.support.metrics import sample

NOW = dt.datetime(2025, 1, 17, 12, 0, tzinfo=dt.timezone.utc)


def impression(i: int, scene: str = "t2t") -> dict:
    return schema.impression_document(impression_id=f"imp-{i}", scene=scene, arm="ranking=control", query="text",
                                      assignments=[("ranking", "control", "control", "bucket")], item_ids=[1, 2, 3],
                                      user=None, at=NOW)


def click(i: int, item: int = 2) -> dict:
    return schema.feedback_document(impression_id=f"imp-{i}", scene="t2t", assignments=[("ranking", "control")],
                                    item_id=item, rank=2, event="click", dwell_seconds=None, at=NOW)


def dropped(reason: str) -> float:
    return sample("mmsearch_serving_impressions_dropped_total", reason=reason)


async def stop(task: asyncio.Task) -> None:
    """Cancel ``task`` and wait until it has ended (a cancelled task left pending runs on in the shared loop)."""
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)


async def count(collection, n: int) -> bool:
    return await collection.count_documents({}) == n


@pytest.fixture
def database() -> str:
    return f"events_{uuid.uuid4().hex[:8]}"


async def test_impressions_are_drained_into_the_store_with_a_ttl_index(mongo_server, database):
    store = MongoEvents(mongo_server, database, ttl_days=7, buffer=100, batch_max=3)
    drain = asyncio.create_task(store.run())
    client = AsyncMongoClient(mongo_server)
    try:
        try:
            assert all(store.record(impression(i)) for i in range(10))
            collection = client[database][schema.IMPRESSIONS]
            await eventually_async(lambda: count(collection, 10), "10 impressions stored")
            assert (await collection.find_one({"_id": "imp-3"}))["items"][1] == {"id": 2, "rank": 2}
            for name in (schema.IMPRESSIONS, schema.FEEDBACK):
                indexes = {tuple(ix["key"]): ix async for ix in await client[database][name].list_indexes()}
                assert indexes[("at",)]["expireAfterSeconds"] == 7 * 86400
        finally:
            await stop(drain)
            await store.close()
        longer = MongoEvents(mongo_server, database, ttl_days=30, buffer=10)
        assert not await longer.feedback(click(1), 5.0)  # the first write of a process makes the indexes
        ttl = {tuple(ix["key"]): ix.get("expireAfterSeconds")
               async for ix in await client[database][schema.IMPRESSIONS].list_indexes()}
        assert ttl[("at",)] == 30 * 86400  # a changed TTL is applied to the existing index
        await longer.close()
    finally:
        await client.close()


async def test_the_same_feedback_twice_is_stored_once(mongo_server, database):
    store = MongoEvents(mongo_server, database, ttl_days=1, buffer=10)
    assert await store.feedback(click(1), 5.0) is False
    assert await store.feedback(click(1), 5.0) is True
    assert await store.feedback(click(1, item=3), 5.0) is False
    await store.close()
    async with AsyncMongoClient(mongo_server) as client:
        assert await client[database][schema.FEEDBACK].count_documents({}) == 2


async def test_a_full_buffer_drops_and_counts_without_blocking(mongo_server, database):
    store = MongoEvents(mongo_server, database, ttl_days=1, buffer=2)  # no drain running
    before = dropped("buffer_full")
    assert [store.record(impression(i)) for i in range(5)] == [True, True, False, False, False]
    assert dropped("buffer_full") - before == 3
    await store.close()  # flushes the two buffered ones
    async with AsyncMongoClient(mongo_server) as client:
        assert await client[database][schema.IMPRESSIONS].count_documents({}) == 2


async def test_a_store_that_is_down_keeps_what_the_buffer_holds_drops_the_rest_and_recovers(tmp_path):
    from mmsearch.dev.mongo import start_mongo

    port = free_port()
    store = MongoEvents(f"mongodb://127.0.0.1:{port}", "events", ttl_days=1, buffer=3, flush_s=0.0, timeout_s=0.3)
    drain = asyncio.create_task(store.run())
    before = dropped("buffer_full")
    server = client = None
    try:
        assert [store.record(impression(i)) for i in range(5)] == [True] * 3 + [False] * 2  # never waits
        await eventually_async(lambda: store.problem, "the drain holding a batch it cannot write")
        assert "ServerSelectionTimeoutError" in store.problem
        assert [store.record(impression(i)) for i in range(5, 10)] == [True] * 3 + [False] * 2
        assert dropped("buffer_full") - before == 4
        # the drain's failed writes probe the store: feedback is refused at once, not after its timeout
        with pytest.raises(Unavailable, match="event store at mongodb://127.0.0.1:.* is down .*answering at once"):
            await store.feedback(click(1), 30.0)
        # the store comes back (no restart of anything here); starting it blocks, so not on the loop
        server = await asyncio.to_thread(start_mongo, tmp_path / "mongo", port=port, timeout=60)
        client = AsyncMongoClient(server.uri)
        collection = client["events"][schema.IMPRESSIONS]
        await eventually_async(lambda: count(collection, 6), "the 6 buffered impressions stored")
        assert sorted([d["_id"] async for d in collection.find({}, {"_id": 1})]) == \
            [f"imp-{i}" for i in (0, 1, 2, 5, 6, 7)]
        assert store.problem == "" and await store.feedback(click(1), 5.0) is False
    finally:
        await stop(drain)
        await store.close()
        if client is not None:
            await client.close()
        if server is not None:
            server.stop()
