"""sync on a stdlib index while serving answers: 20 documents added, 10 changed, 10 removed.

Milvus is the Lite engine on TCP (the job processes and the in-process serving share it); the
summaries live per version (``<scene>_<version>``, serving's ``summary.collection: "{collection}"``).
Checked: exact counts in Milvus and MongoDB, the changed documents found by their new text, the
removed ones never returned, no failed request during the sync, the change record serving reads
(generation, changed ids), and serving's summary cache, holding the changed documents before the
sync, serves their new summaries after it; a SIGKILL half-way then a rerun ends in the state of one clean run; a
second run changes nothing; another model or text template is refused.
"""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import grpc
import numpy as np
import pymongo
import pytest

from mmsearch.jobs.prepare import stable_id
from mmsearch.core.milvus.connection import connect
from mmsearch.core.milvus.registry import read_state
from mmsearch.core.milvus.rows import read_hashes
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.indexes import build_version, lifecycle_servers, prepare_stdlib, serve_versions, write_corpus
from tests.support.jobs import job_killed_after, run_job
from tests.support.loops import eventually
from tests.support.load import SearchLoad, text_requests

pytestmark = pytest.mark.slow
SCENE = "synced"
MODULES = "csv,json,gzip,base64,shutil,uuid"
NEW_TEXTS = [f"Return the {thing} of the {place}." for thing, place in [
    ("tide table", "harbour"), ("boiling point", "kettle"), ("orbit period", "moon"), ("weight", "anchor"),
    ("colour", "sunset"), ("altitude", "glacier"), ("speed", "glider"), ("pitch", "violin string"),
    ("age", "oak tree"), ("depth", "well"), ("length", "bridge"), ("volume", "barrel"), ("price", "ticket"),
    ("temperature", "oven"), ("voltage", "battery"), ("humidity", "greenhouse"), ("salinity", "lagoon"),
    ("wingspan", "albatross"), ("yield", "wheat field"), ("bloom time", "cherry tree")]]
CHANGED_TEXTS = [f"Knit a {item} from {material} yarn." for item, material in [
    ("scarf", "alpaca"), ("sweater", "merino"), ("hat", "cotton"), ("sock", "wool"), ("glove", "cashmere"),
    ("blanket", "acrylic"), ("shawl", "silk"), ("mitten", "mohair"), ("vest", "linen"), ("beanie", "bamboo")]]


def modified(records: list[dict]) -> tuple[list[dict], list[dict], list[dict], list[dict]]:
    """(new corpus, added, changed, removed): 10 removed, 10 changed, 20 added."""
    removed, changed, kept = records[:10], records[10:20], records[20:]
    changed = [{**r, "answer": text} for r, text in zip(changed, CHANGED_TEXTS)]
    added = [{"id": stable_id(f"added.doc{i}"), "question": f"added.doc{i}", "answer": text, "category": "added"}
             for i, text in enumerate(NEW_TEXTS)]
    return changed + kept + added, added, changed, removed


@pytest.fixture(scope="module")
def synced(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("sync")
    with lifecycle_servers(tmp) as (milvus, mongo):
        original = prepare_stdlib(tmp / "v1", MODULES)
        for version in ("1", "2"):  # two identical versions: one synced cleanly, one killed half-way
            build_version(tmp / "v1", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=minilm_repo,
                          scene=SCENE, version=version, encode=version == "1")
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1", "--keep", "3")
        corpus, added, changed, removed = modified(original)
        write_corpus(tmp / "new", corpus)
        stack = serve_versions(service_loop, tmp, SCENE, minilm_repo, milvus.uri, mongo.uri)
        yield {"tmp": tmp, "milvus": milvus, "mongo": mongo, "stack": stack, "original": original,
               "corpus": corpus, "added": added, "changed": changed, "removed": removed, "repo": minilm_repo}
        stack.close()


def sync_args(s, *extra: str) -> list[str]:
    return ["sync", "--workdir", str(s["tmp"] / "new"), "--milvus-uri", s["milvus"].uri, "--mongo-uri", s["mongo"].uri,
            "--scene", SCENE, "--repository", str(s["repo"]), "--model", "minilm", "--collection", "{collection}",
            "--device", "cpu", *extra]


def state_of(s, name: str) -> tuple[dict, dict, dict]:
    """({id: hash}, {id: vector}, {id: document}) of collection ``name`` and its summaries."""
    client = connect(s["milvus"].uri)
    try:
        hashes = read_hashes(client, name)
        rows = client.query(name, filter="id >= 0", output_fields=["vector"], limit=16384)
        vectors = {int(r["id"]): np.asarray(r["vector"], dtype=np.float32) for r in rows}
        record = read_state(client, name)
    finally:
        client.close()
    docs = {d["_id"]: d for d in pymongo.MongoClient(s["mongo"].uri).mmsearch[name].find()}
    return hashes, vectors, {**docs, "_state": record}


def search(stub, text: str, top_k: int = 5):
    return stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=text, top_k=top_k), timeout=10).items


def test_sync_while_serving_gives_exact_counts_new_texts_and_no_removed_ids(synced):
    s = synced
    texts = [r["answer"] for r in s["original"][20:60]]
    with grpc.insecure_channel(s["stack"].address) as channel:  # the documents to change, in serving's cache
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        before = {r["id"]: r["answer"] for r in s["original"][10:20]}
        for doc_id, text in before.items():
            for _ in range(2):  # the second answer comes from the summary cache
                found = {item.id: item.summary["answer"] for item in search(stub, text, top_k=5)}
                assert found.get(doc_id) == text, (doc_id, found)
    with SearchLoad(s["stack"].address, text_requests(SCENE, texts), concurrency=3) as load:
        load.wait_for(20)
        result = run_job(*sync_args(s))
        done = load.mark()
        load.wait_for(done + 20)
    assert load.failures == []
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["new"], summary["changed"], summary["removed"], summary["failed"]) == (20, 10, 10, 0)
    assert summary["entities"] == len(s["corpus"]) == len(s["original"]) + 10 and summary["generation"] == 1
    hashes, _, docs = state_of(s, f"{SCENE}_1")
    state = docs.pop("_state")
    assert set(hashes) == {r["id"] for r in s["corpus"]} and len(docs) == len(s["corpus"])
    assert state["count"] == len(s["corpus"]) and state["generation"] == 1 and "pending" not in state
    assert sorted(state["changed"]["deleted"]) == sorted(r["id"] for r in s["removed"])
    assert sorted(state["changed"]["upserted"]) == sorted(r["id"] for r in s["added"] + s["changed"])
    # serving reads the change (the summary caches key on it) without moving the route
    eventually(lambda: s["stack"].serving.store.current.records[SCENE].get("generation") == 1,
               "serving reading sync generation 1", timeout=20)
    removed = {r["id"] for r in s["removed"]}
    with grpc.insecure_channel(s["stack"].address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for record in s["changed"] + s["added"]:
            top = search(stub, record["answer"], top_k=1)[0]  # the changed ones were cached before: never stale
            assert top.id == record["id"] and top.summary["answer"] == record["answer"]
        for record in s["changed"]:  # found by their old text too (if at all), with the new summary
            assert all(item.summary["answer"] != before[record["id"]]
                       for item in search(stub, before[record["id"]], top_k=20) if item.id == record["id"])
        for record in s["removed"]:
            assert removed.isdisjoint(item.id for item in search(stub, record["answer"], top_k=20))
    assert all(removed.isdisjoint(sample.ids) for sample in load.phase(done))
    again = json.loads(run_job(*sync_args(s)).stdout.strip().splitlines()[-1])
    assert (again["new"], again["changed"], again["removed"], again["generation"]) == (0, 0, 0, 1)


def test_sigkill_half_way_then_rerun_gives_the_state_of_a_clean_run(synced):
    s = synced
    clean = state_of(s, f"{SCENE}_1") if "generation" in state_of(s, f"{SCENE}_1")[2]["_state"] else None
    if clean is None:  # this test alone: sync version 1 cleanly first
        run_job(*sync_args(s))
        clean = state_of(s, f"{SCENE}_1")
    args = sync_args(s, "--version", "2", "--batch-size", "2")
    total = 40
    killed = job_killed_after(1, *args)  # after the first batch of 2
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    half = state_of(s, f"{SCENE}_2")
    assert half[0] != clean[0] and half[2]["_state"].get("pending")  # killed with work left
    summary = json.loads(run_job(*args).stdout.strip().splitlines()[-1])
    assert summary["new"] + summary["changed"] + summary["removed"] < total  # only what was left
    hashes, vectors, docs = state_of(s, f"{SCENE}_2")
    clean_hashes, clean_vectors, clean_docs = clean
    assert hashes == clean_hashes
    assert vectors.keys() == clean_vectors.keys()
    assert all(np.allclose(vectors[i], clean_vectors[i], atol=1e-5) for i in vectors)
    state, clean_state = docs.pop("_state"), clean_docs.pop("_state")
    assert docs == clean_docs
    assert state["count"] == clean_state["count"] and state["corpus_sha256"] == clean_state["corpus_sha256"]
    assert state["generation"] == 1 and "pending" not in state  # the killed run's changes are in this generation
    assert sorted(state["changed"]["upserted"]) == sorted(clean_state["changed"]["upserted"])
    assert sorted(state["changed"]["deleted"]) == sorted(clean_state["changed"]["deleted"])


def with_flag(args: list[str], flag: str, value: str) -> list[str]:
    args = list(args)
    if flag in args:
        args[args.index(flag) + 1] = value
    else:
        args += [flag, value]
    return args


def test_another_model_text_field_or_an_empty_corpus_is_refused(synced, tmp_path):
    from tests.jobs.milvus_data import write_manifest

    s = synced
    write_manifest(tmp_path / "repo", "minilm", 384, seed="another export")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "corpus.jsonl").write_text("\n")
    for flag, value, expected in [
        ("--repository", str(tmp_path / "repo"), "was built by model 'minilm' (onnx "),
        ("--text-field", "question", "--text-field 'question': collection synced_1 embeds '{answer}'"),
        ("--scene", "nothing", "scene nothing has no published version to sync"),
        ("--workdir", str(tmp_path / "empty"), "empty corpus"),
    ]:
        result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", *with_flag(sync_args(s), flag, value)],
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and expected in lines[0], result.stderr
