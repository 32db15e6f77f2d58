"""The registry collection through a client that remembers it exists: one request a read or write, and still
right when another client drops it (a real Milvus Lite file; two clients of this process on it)."""
from __future__ import annotations

import pytest
from pymilvus import MilvusClient

from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.names import REGISTRY
from mmsearch.core.milvus.registry import registry_get, registry_gone
from mmsearch.core.milvus.registry_writes import registry_delete, registry_put
from tests.support.counting import Counting


@pytest.fixture()
def two_clients(tmp_path):
    uri = str(tmp_path / "registry.db")
    mine = connect(uri)
    other = MilvusClient(uri=uri, alias="other")
    try:
        yield Counting(mine), other
    finally:
        other.close()
        close(mine, uri)  # stops the engine connect() started


def test_a_registry_read_or_write_is_one_request_once_the_client_has_seen_it(two_clients):
    client, _ = two_clients
    assert registry_get(client, "alias:none") is None  # no registry yet: nothing is made by a read
    assert REGISTRY not in client.list_collections()
    registry_put(client, "alias:scene", {"collection": "scene_1"})
    client.reset()
    registry_put(client, "alias:scene", {"collection": "scene_2"})
    assert registry_get(client, "alias:scene") == {"collection": "scene_2"}
    registry_delete(client, "alias:scene")
    assert registry_get(client, "alias:scene") is None
    assert dict(client.calls) == {"upsert": 1, "query": 2, "delete": 1}


def test_the_registry_survives_another_client_dropping_it(two_clients):
    client, other = two_clients
    registry_put(client, "collection:a", {"complete": True})
    assert registry_get(client, "collection:a") == {"complete": True}  # this client now takes it as there
    other.drop_collection(REGISTRY)
    assert registry_get(client, "collection:a") is None  # gone: checked again, and a missing registry holds nothing
    registry_delete(client, "collection:a")  # nothing to delete: no error, and no registry made
    assert not other.has_collection(REGISTRY)
    registry_put(client, "collection:a", {"complete": False})
    assert registry_get(client, "collection:a") == {"complete": False}
    other.drop_collection(REGISTRY)
    registry_put(client, "collection:b", {"count": 3})  # taken as there: the upsert fails, the registry is made again
    assert registry_get(client, "collection:b") == {"count": 3} and registry_get(client, "collection:a") is None
    assert other.has_collection(REGISTRY)


def test_only_a_missing_or_unloaded_collection_is_taken_for_a_registry_gone():
    from pymilvus.exceptions import MilvusException

    assert registry_gone(MilvusException(100, "collection not found"))
    assert registry_gone(MilvusException(101, "collection not loaded[collection=mmsearch_registry]"))
    assert registry_gone(RuntimeError("can't find collection mmsearch_registry"))
    assert not registry_gone(MilvusException(1, "deadline exceeded"))
    assert not registry_gone(ConnectionError("Milvus is down"))
