"""The write log's reads go through their indexes on a real MongoDB-wire server (secantusd, spoken to by
pymongo): the entries a query examines are the entries it returns, however long the log has grown."""
from __future__ import annotations

import pymongo
import pytest

from mmsearch.core.writelog import PENDING, Entry, WriteLog
from mmsearch.core.written import written_query


@pytest.fixture()
def log(mongo_server, request):
    client = pymongo.MongoClient(mongo_server)
    database = f"log_{request.node.name[-40:]}"
    log = WriteLog(client, database)
    log.ensure_indexes()
    yield log
    client.drop_database(database)
    client.close()


def examined(collection, query: dict) -> tuple[int, int, str]:
    """(documents examined, documents returned, the index used) of ``query``'s execution."""
    plan = collection.find(query).explain()
    stats = plan["executionStats"]
    stage = plan["queryPlanner"]["winningPlan"]
    while "inputStage" in stage and "indexName" not in stage:
        stage = stage["inputStage"]
    return stats["totalDocsExamined"], stats["nReturned"], stage.get("indexName", "")


def test_a_scenes_entries_after_a_position_are_read_through_the_scene_position_index(log):
    """The writer's catch-up read (``since``) and serving's freshness read (``written_query``) name a scene and
    a position range: with only the scene's own index they examined every entry of the scene."""
    first = log.reserve(300)
    log.append([Entry(first + k, "docs" if k % 3 else "pics", "upsert", k) for k in range(300)])
    last = first + 299
    assert [e.seq for e in log.since("docs", last - 6)] == [s for s in range(last - 5, last + 1) if (s - first) % 3]
    for query in ({"scene": "docs", "_id": {"$gt": last - 6}}, written_query("docs", last - 6, last)[0]):
        docs, returned, index = examined(log.entries, query)
        assert (docs, returned, index) == (4, 4, "scene_position")


def test_a_scenes_pending_entries_are_read_through_the_scene_state_index(log):
    first = log.reserve(50)
    log.append([Entry(first + k, "docs", "upsert", k) for k in range(50)])
    log.mark_applied(range(first, first + 48))
    assert [e.seq for e in log.pending("docs")] == [first + 48, first + 49]
    docs, returned, index = examined(log.entries, {"scene": "docs", "state": PENDING})
    assert (docs, returned, index) == (2, 2, "scene_state")
