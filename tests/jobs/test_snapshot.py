"""snapshot and restore on the stdlib index (real stages, real MiniLM): a snapshot to a folder restored
into an empty Milvus and an empty MongoDB database answers the labelled queries with the same top 10 (dense
and BM25) and serves the same summaries; a snapshot on S3 (moto) with a flipped byte or a missing part is
refused naming the part, before anything is written."""
from __future__ import annotations

import json

import boto3
import pymongo
import pytest

from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.registry import read_state, resolve_alias
from mmsearch.core.writelog import applied_position
from mmsearch.jobs.errors import JobError
from mmsearch.jobs.evaluate import evaluate
from mmsearch.jobs.restore import restore
from mmsearch.jobs.snapshot import snapshot
from tests.support.jobs import run_job

pytestmark = pytest.mark.timeout(600)


def _records(index) -> list[dict]:
    return [json.loads(line) for line in (index.workdir / "corpus.jsonl").read_text().splitlines() if line.strip()]


def _queries(tmp_path, records) -> str:
    """Labelled queries: the answers of 15 documents (their text differs from what was embedded)."""
    path = tmp_path / "queries.jsonl"
    path.write_text("".join(json.dumps({"query": r["answer"][:200], "relevant_ids": [r["id"]]}) + "\n"
                            for r in records[:: max(1, len(records) // 15)][:15] if r.get("answer")))
    return str(path)


def _tops(milvus: str, alias: str, queries: str, repository: str, workdir) -> list[list[int]]:
    evaluate(milvus, alias, queries, repository, str(workdir), k=10)
    collection = json.loads(next((workdir / "evaluation").glob("*.json")).read_text())
    return [q["top"] for q in collection["queries"]]


def _bm25(milvus: str, alias: str, texts: list[str]) -> list[list[int]]:
    from mmsearch.core.milvus.registry import resolve_collection

    client = connect(milvus)
    try:
        name = resolve_collection(client, alias)
        hits = client.search(name, data=texts, anns_field="sparse", limit=10, output_fields=["id"],
                             search_params={"metric_type": "BM25"})
        return [[int(h["id"]) for h in row] for row in hits]
    finally:
        close(client, milvus)


def test_a_snapshot_restored_into_an_empty_cluster_gives_the_same_answers(stdlib_index, tmp_path):
    index = stdlib_index
    records = _records(index)
    queries = _queries(tmp_path, records)
    location = tmp_path / "snapshots" / "stdlib-1"
    manifest = snapshot(str(index.milvus_uri), index.scene, str(location), mongo_uri=index.mongo_uri,
                        collection=index.collection, part_rows=100)
    assert manifest["collection"] == index.milvus_collection and manifest["rows"] == index.documents
    assert manifest["summaries"] == index.documents
    assert sorted(p["kind"] for p in manifest["parts"] if p["kind"] in ("collection", "model")) == ["collection", "model"]
    assert len([p for p in manifest["parts"] if p["kind"] == "rows"]) == -(-index.documents // 100)
    with pytest.raises(JobError, match="a snapshot is there already"):
        snapshot(str(index.milvus_uri), index.scene, str(location), mongo_uri=index.mongo_uri)

    # An empty cluster: a new Milvus, a new MongoDB database; restore and publish with the CLI.
    milvus = str(tmp_path / "empty-milvus.db")
    run_job("restore", "--from", str(location), "--milvus-uri", milvus, "--scene", index.scene, "--version", "r1",
            "--mongo-uri", index.mongo_uri, "--database", "restored", "--publish")
    client = connect(milvus)
    try:
        assert resolve_alias(client, index.scene) == f"{index.scene}_r1"
        state = read_state(client, f"{index.scene}_r1")
        assert state["complete"] and state["count"] == index.documents
        assert state["restored_from"]["collection"] == index.milvus_collection
        assert applied_position(client, f"{index.scene}_r1") == manifest["writes_position"]
    finally:
        close(client, milvus)

    before = _tops(str(index.milvus_uri), index.scene, queries, str(index.repository), tmp_path / "before")
    after = _tops(milvus, index.scene, queries, str(index.repository), tmp_path / "after")
    assert len(before) >= 10 and after == before
    texts = ["parse a json document", "write rows to a csv file", "decode base64"]
    assert _bm25(milvus, index.scene, texts) == _bm25(str(index.milvus_uri), index.scene, texts)
    with pymongo.MongoClient(index.mongo_uri) as mongo:
        old, new = mongo[index.database][index.collection], mongo["restored"][index.collection]
        assert new.count_documents({}) == index.documents
        for record in records[:: max(1, len(records) // 10)]:
            assert new.find_one({"_id": record["id"]}) == old.find_one({"_id": record["id"]})


def test_a_damaged_snapshot_is_refused_naming_the_part_before_anything_is_written(stdlib_index, s3_server,
                                                                                  tmp_path):
    index = stdlib_index
    location = s3_server.uri("snapshots", "stdlib-damaged")
    manifest = snapshot(str(index.milvus_uri), index.scene, location, mongo_uri=index.mongo_uri,
                        collection=index.collection, part_rows=150)
    s3 = boto3.client("s3", endpoint_url=s3_server.endpoint)
    prefix = location.removeprefix(f"s3://{s3_server.bucket}/")
    milvus = str(tmp_path / "milvus.db")

    def attempt(version: str) -> str:
        with pytest.raises(JobError) as caught:
            restore(location, milvus, index.scene, version, mongo_uri=index.mongo_uri, database="damaged")
        return str(caught.value)

    rows = next(p["name"] for p in manifest["parts"] if p["kind"] == "rows")
    key = f"{prefix}/{rows}"
    original = s3.get_object(Bucket=s3_server.bucket, Key=key)["Body"].read()
    flipped = bytearray(original)
    flipped[len(flipped) // 2] ^= 0x01
    s3.put_object(Bucket=s3_server.bucket, Key=key, Body=bytes(flipped))
    assert f"part {rows} is damaged" in attempt("a")
    s3.put_object(Bucket=s3_server.bucket, Key=key, Body=original)

    summaries = [p["name"] for p in manifest["parts"] if p["kind"] == "summaries"][-1]
    s3.delete_object(Bucket=s3_server.bucket, Key=f"{prefix}/{summaries}")
    assert f"part {summaries} is missing" in attempt("b")

    s3.delete_object(Bucket=s3_server.bucket, Key=f"{prefix}/manifest.json")
    assert "no manifest.json" in attempt("c")
    client = connect(milvus)
    try:
        assert [c for c in client.list_collections() if c.startswith(index.scene)] == []  # nothing was written
    finally:
        close(client, milvus)


def test_prune_keeps_the_newest_snapshots_and_leaves_what_is_not_one(tmp_path):
    from mmsearch.jobs.snapshot import prune

    for i, name in enumerate(["b", "a", "c", "d"]):  # created in this order: b oldest, d newest
        (tmp_path / name).mkdir()
        (tmp_path / name / "rows-00000.jsonl").write_text("{}\n")
        (tmp_path / name / "manifest.json").write_text(json.dumps({"created_at": 1000 + i}))
    (tmp_path / "writing").mkdir()
    (tmp_path / "writing" / "rows-00000.jsonl").write_text("{}\n")  # no manifest yet
    assert prune(str(tmp_path), 2) == ["b", "a"]
    assert sorted(p.name for p in tmp_path.iterdir() if any(p.iterdir())) == ["c", "d", "writing"]
    with pytest.raises(JobError, match="keep at least 1"):
        prune(str(tmp_path), 0)
