"""Milvus Lite engines in one process: a job stage run in-process beside a serving matcher on the
same file must not stop the matcher's engine, and a stage that started the engine stops it when done
(so the next process can open the file)."""
from __future__ import annotations

from pymilvus import MilvusClient

from mmsearch.core.milvus.connection import _engine_key, _lite_servers, close, connect, session


def _running(uri) -> bool:
    return _engine_key(str(uri)) in _lite_servers()._servers


def test_a_stage_leaves_running_an_engine_another_user_started(tmp_path):
    uri = str(tmp_path / "shared.db")
    other = MilvusClient(uri=uri, alias="matcher")  # as serving's matcher opens it: not through connect()
    try:
        other.create_collection("c", dimension=4)
        with session(uri, "listing") as client:
            assert client.list_collections() == ["c"]
        assert _running(uri)
        assert other.list_collections() == ["c"]
    finally:
        other.close()
        _lite_servers().release_server(uri)


def test_the_engine_a_stage_started_stops_when_its_last_client_closes(tmp_path):
    uri = str(tmp_path / "own.db")
    first, second = connect(uri), connect(uri)
    close(first, uri)
    assert _running(uri) and second.list_collections() == []
    close(second, uri)
    assert not _running(uri)
