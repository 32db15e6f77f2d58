"""Live writes through the writer's gRPC DocumentService, on a stdlib index the jobs built and serving searches.

Real components: the Milvus Lite engine on TCP (shared by the job processes, the writer and serving),
secantusd, the real all-MiniLM-L6-v2. Checked: upsert -> search finds it with its fields and filters;
change -> the new text is found and shown (not the cached summary); delete -> gone from search and get;
same content -> unchanged; the online vector equals the offline encode's; bad items refused one by one
(naming the item and field) with the rest applied; scopes; a writer SIGKILLed mid-batch leaves no half
pair and the restarted writer completes the logged writes.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys

import grpc
import numpy as np
import pymongo
import pytest
from google.protobuf import struct_pb2

from mmsearch.core.access.keys import mint
from mmsearch.core.milvus.connection import connect
from mmsearch.v1 import documents_pb2, documents_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tests.support.counting import Counting
from tests.support.indexes import lifecycle_servers, prepare_stdlib, serve_versions, write_corpus
from tests.support.jobs import run_job
from tests.support.loops import eventually
from tests.support.processes import start_service

pytestmark = pytest.mark.slow
SCENE = "live"
APPLIED, UNCHANGED, REFUSED = (documents_pb2.ITEM_STATUS_APPLIED, documents_pb2.ITEM_STATUS_UNCHANGED,
                               documents_pb2.ITEM_STATUS_REFUSED)


@pytest.fixture(scope="module")
def live(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("writes")
    with lifecycle_servers(tmp) as (milvus, mongo):
        records = [{**r, "rank": i} for i, r in enumerate(prepare_stdlib(tmp / "v1", "csv,json"))]
        write_corpus(tmp / "v1", records)
        run_job("encode", "--workdir", str(tmp / "v1"), "--repository", str(minilm_repo), "--model", "minilm",
                "--text-field", "answer", "--device", "cpu")
        run_job("push-milvus", "--workdir", str(tmp / "v1"), "--milvus-uri", milvus.uri, "--scene", SCENE,
                "--version", "1", "--repository", str(minilm_repo), "--model", "minilm",
                "--fields", "category:keyword,rank:number", "--bm25-fields", "answer")
        run_job("push-mongo", "--workdir", str(tmp / "v1"), "--mongo-uri", mongo.uri, "--collection", f"{SCENE}_1")
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1")
        keys, lines = {}, []
        for role, scopes in {"writer": ["write", "search"], "reader": ["search"]}.items():
            keys[role], line = mint(scopes, [SCENE], name=role)
            lines.append(line)
        (tmp / "keys.jsonl").write_text("".join(line + "\n" for line in lines))
        env = {"MMSEARCH_MILVUS_URI": milvus.uri, "MMSEARCH_MONGO_URI": mongo.uri,
               "MMSEARCH_MODEL_REPOSITORY": str(minilm_repo), "MMSEARCH_WRITER_SCENES": f'{{"{SCENE}": {{}}}}',
               "MMSEARCH_API_KEYS_FILE": str(tmp / "keys.jsonl"), "MMSEARCH_ANONYMOUS_SCENES": "",
               "MMSEARCH_MAX_BATCH_DOCUMENTS": "8", "MMSEARCH_WRITER_REPAIR_INTERVAL_SECONDS": "0.5"}
        writer = start_service("writer", env)
        stack = serve_versions(service_loop, tmp, SCENE, minilm_repo, milvus.uri, mongo.uri)
        channel = grpc.insecure_channel(writer.target)
        yield {"tmp": tmp, "milvus": milvus, "mongo": mongo, "writer": writer, "env": env, "keys": keys,
               "records": records, "stub": documents_pb2_grpc.DocumentServiceStub(channel), "stack": stack,
               "repo": minilm_repo}
        channel.close()
        stack.close()
        writer.stop()


def key(live, role: str = "writer"):
    return (("authorization", f"Bearer {live['keys'][role]}"),)


def doc(ident: int | None, **fields) -> documents_pb2.Document:
    struct = struct_pb2.Struct()
    struct.update(fields)
    return documents_pb2.Document(fields=struct) if ident is None else documents_pb2.Document(id=ident, fields=struct)


def upsert(live, *docs, scene: str = SCENE, role: str = "writer") -> documents_pb2.WriteResponse:
    return live["stub"].Upsert(documents_pb2.UpsertRequest(scene=scene, documents=list(docs)), metadata=key(live, role),
                               timeout=60)


def search_ids(live, text: str, **fields) -> list[int]:
    stub = retrieval_pb2_grpc.RetrievalServiceStub(grpc.insecure_channel(live["stack"].address))
    reply = stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=text, **fields), timeout=20)
    return [item.id for item in reply.items]


def hit_of(live, text: str, ident: int):
    stub = retrieval_pb2_grpc.RetrievalServiceStub(grpc.insecure_channel(live["stack"].address))
    return next((h for h in stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=text), timeout=20).items
                 if h.id == ident), None)


def test_the_writer_yields_the_cpu_to_searches(live):
    """The writer lowers its own priority (MMSEARCH_WRITER_NICE, default 10) before its threads start."""
    assert os.getpriority(os.PRIO_PROCESS, live["writer"].proc.pid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 10)


def test_upsert_change_delete_round_trip(live):
    text = "Brew a pot of jasmine tea with water just below boiling."
    reply = upsert(live, doc(9_000_001, question="tea.brew", answer=text, category="kitchen", rank=7))
    assert [r.status for r in reply.results] == [APPLIED] and reply.collection == f"{SCENE}_1" and reply.position > 0
    hit = eventually(lambda: hit_of(live, "how do I make jasmine tea", 9_000_001), "the new document is found")
    assert hit.summary["answer"] == text and hit.summary["category"] == "kitchen"
    assert upsert(live, doc(9_000_001, question="tea.brew", answer=text, category="kitchen",
                            rank=7)).results[0].status == UNCHANGED
    changed = "Sharpen a chisel on a whetstone, keeping the bevel flat."
    upsert(live, doc(9_000_001, question="tea.brew", answer=changed, category="workshop", rank=7))
    hit = eventually(lambda: (h := hit_of(live, "sharpen a chisel on a whetstone", 9_000_001))
                     and h.summary["answer"] == changed and h, "the changed text is found and shown")
    assert hit.summary["category"] == "workshop"
    got = live["stub"].Get(documents_pb2.GetRequest(scene=SCENE, ids=[9_000_001, 42]), metadata=key(live, "reader"),
                           timeout=30)
    assert [d.id for d in got.documents] == [9_000_001] and list(got.missing) == [42]
    assert got.documents[0].fields["answer"] == changed
    gone = live["stub"].Delete(documents_pb2.DeleteRequest(scene=SCENE, ids=[9_000_001, 43]), metadata=key(live),
                               timeout=60)
    assert [r.status for r in gone.results] == [APPLIED, documents_pb2.ITEM_STATUS_NOT_FOUND]
    assert 9_000_001 not in search_ids(live, "sharpen a chisel on a whetstone")
    got = live["stub"].Get(documents_pb2.GetRequest(scene=SCENE, ids=[9_000_001]), metadata=key(live), timeout=30)
    assert not got.documents and list(got.missing) == [9_000_001]


def test_the_online_vector_is_the_offline_one_and_a_corpus_record_is_unchanged(live):
    from mmsearch.jobs.encode import TextInputs, encode_records, load_encoder

    original = live["records"][3]
    assert upsert(live, doc(original["id"], **{k: v for k, v in original.items() if k != "id"})).results[0].status \
        == UNCHANGED  # the same record built offline: same content hash
    record = {"id": 9_000_002, "question": "kite.fly", "answer": "Fly a kite on a windy hill.", "category": "x", "rank": 1}
    assert upsert(live, doc(record["id"], **{k: v for k, v in record.items() if k != "id"})).results[0].status == APPLIED
    encoder = load_encoder(str(live["repo"]), "minilm", device="cpu")
    _, offline, _ = encode_records(encoder, TextInputs(encoder, "{answer}"), [record], 8)
    client = connect(live["milvus"].uri)
    try:
        row = client.query(f"{SCENE}_1", filter=f"id == {record['id']}", output_fields=["vector"],
                           consistency_level="Strong")[0]
    finally:
        client.close()
    np.testing.assert_allclose(np.asarray(row["vector"], dtype=np.float32), offline[0], atol=1e-5)


def test_bad_items_are_refused_one_by_one_and_the_rest_applied(live):
    reply = upsert(live, doc(None, answer="no id"), doc(9_000_010, answer="fine", category="c", rank=1),
                   doc(9_000_011, answer="bad rank", category="c", rank="high"),
                   doc(9_000_012, question="no answer field", category="c", rank=2),
                   doc(9_000_010, answer="twice", category="c", rank=1),
                   documents_pb2.Document(id=9_000_013, fields=doc(0, answer="img", rank=1).fields, image=b"png"))
    by_index = {r.index: r for r in reply.results}
    assert by_index[1].status == APPLIED
    assert (by_index[0].status, by_index[0].field) == (REFUSED, "id")
    assert (by_index[2].status, by_index[2].field) == (REFUSED, "fields.rank") and "number" in by_index[2].reason
    assert (by_index[3].status, by_index[3].field) == (REFUSED, "fields.answer")
    assert (by_index[4].status, by_index[4].field) == (REFUSED, "id")
    assert (by_index[5].status, by_index[5].field) == (REFUSED, "image")
    with pytest.raises(grpc.RpcError) as unknown:
        upsert(live, doc(1, answer="x"), scene="nowhere")
    assert unknown.value.code() in (grpc.StatusCode.NOT_FOUND, grpc.StatusCode.PERMISSION_DENIED)
    with pytest.raises(grpc.RpcError) as over:
        upsert(live, *[doc(9_100_000 + i, answer="x", rank=1) for i in range(9)])
    assert over.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "MMSEARCH_MAX_BATCH_DOCUMENTS" in over.value.details()
    with pytest.raises(grpc.RpcError) as reader:
        upsert(live, doc(9_000_020, answer="x", rank=1), role="reader")
    assert reader.value.code() == grpc.StatusCode.PERMISSION_DENIED


MAX_CALLS_PER_BATCH = 8  # 3 alias reads, the log position read twice, the held hashes; the rows, the position


def test_an_upsert_batch_makes_few_milvus_calls(live, monkeypatch):
    """The real writer code in this process, its Milvus client counted: once the scene's target is known,
    an upsert batch resolves the alias and writes, without re-reading the collection's record or asking
    whether the registry exists (searches share the engine: every call a write makes, they wait for)."""
    from mmsearch.core.settings import load_settings
    from mmsearch.services.writer.settings import WriterSettings
    from mmsearch.services.writer.writes import Writer

    for name, value in live["env"].items():
        monkeypatch.setenv(name, value)
    client = Counting(connect(live["milvus"].uri))
    mongo = pymongo.MongoClient(live["mongo"].uri)
    writer = Writer(load_settings(WriterSettings), client, mongo)
    try:
        def batch(n: int) -> list[tuple]:
            return [(9_400_000 + 10 * n + k, {"question": f"counted.{n}.{k}", "answer": f"Counted batch {n} item {k}.",
                                                "category": "counted", "rank": k}, b"", "") for k in range(2)]

        assert {o.status for o in writer.upsert(SCENE, batch(0))[2]} == {"applied"}
        client.reset()
        assert {o.status for o in writer.upsert(SCENE, batch(1))[2]} == {"applied"}
        print(f"Milvus calls of an upsert batch: {client.total()} {dict(client.calls)}")
        assert client.total() <= MAX_CALLS_PER_BATCH, dict(client.calls)
        assert client.calls["upsert"] == 2  # the rows, the log position
    finally:
        writer.close()
        mongo.close()
        client.close()


_KILLED_WRITER = """
import os, signal, sys
from mmsearch.services.writer import writes

def hook(step):
    if step == sys.argv[1]:
        os.kill(os.getpid(), signal.SIGKILL)

writes.after_step = hook
from mmsearch.cli import app
app(["serve", "writer"], prog_name="mmsearch")
"""


@pytest.mark.parametrize("step", ["logged", "applied"])
def test_a_writer_killed_mid_batch_leaves_no_half_pair_and_the_restart_completes_it(live, step):
    base = 9_200_000 if step == "logged" else 9_300_000
    env = {**os.environ, **live["env"], "MMSEARCH_HOST": "127.0.0.1", "MMSEARCH_PORT": "0",
           "MMSEARCH_METRICS_PORT": "0", "MMSEARCH_LOG_JSON": "true"}
    proc = subprocess.Popen([sys.executable, "-c", _KILLED_WRITER, step], env=env, stderr=subprocess.PIPE, text=True)
    port = eventually(lambda: next((line for line in iter(proc.stderr.readline, "") if "gRPC server started" in line),
                                   None), "the doomed writer starts", timeout=120)
    import json

    target = f"127.0.0.1:{json.loads(port)['port']}"
    stub = documents_pb2_grpc.DocumentServiceStub(grpc.insecure_channel(target))
    docs = [doc(base + i, answer=f"Doomed batch item {i} about lighthouses.", category="k", rank=i) for i in range(3)]
    with pytest.raises(grpc.RpcError):
        stub.Upsert(documents_pb2.UpsertRequest(scene=SCENE, documents=docs), metadata=key(live), timeout=60)
    assert proc.wait(30) == -signal.SIGKILL
    ids = [base + i for i in range(3)]
    mongo = pymongo.MongoClient(live["mongo"].uri)

    def pairs() -> tuple[set, set]:
        client = connect(live["milvus"].uri)
        try:
            rows = {r["id"] for r in client.query(f"{SCENE}_1", filter=f"id in {ids}", output_fields=["id"],
                                                   consistency_level="Strong")}
        finally:
            client.close()
        return rows, {d["_id"] for d in mongo["mmsearch"][f"{SCENE}_1"].find({"_id": {"$in": ids}})}

    # The running writer's repair loop completes the logged batch (a restart does the same at start).
    rows, docs_held = eventually(lambda: (p := pairs()) and p[0] == set(ids) and p[1] == set(ids) and p,
                                 "the logged writes completed by the repair", timeout=60)
    assert rows == docs_held == set(ids)
    mongo.close()
