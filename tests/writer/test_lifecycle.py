"""No acknowledged live write is lost to the index lifecycle: writes racing `publish` and `publish --rollback`.

Real components: the Milvus Lite engine on TCP shared by the job processes, the writer and serving;
secantusd; the real all-MiniLM-L6-v2. A thread writes continuously through the writer's gRPC
DocumentService (new ids, rewrites of earlier ones, deletes) while `mmsearch job publish --version 2`,
`publish --rollback` and `publish --version 2` again run as processes. At the end every acknowledged
write is in the version the alias ends on, in both stores (Get through the writer, the Milvus rows and
the summaries), and a search through serving finds the last ones. Also: an entry another model encoded
is re-encoded by the target's tower (pure, with a real function for the tower).
"""
from __future__ import annotations

import threading

import grpc
import numpy as np
import pymongo
import pytest
from google.protobuf import struct_pb2

from mmsearch.core.access.keys import mint
from mmsearch.core.milvus.connection import connect
from mmsearch.core.milvus.registry import alias_history, resolve_alias, writes_position
from mmsearch.core.writelog import Entry, ReplayError, encoded_for
from mmsearch.jobs import publish as publish_job
from mmsearch.jobs.replay import LogAccess, Replayer
from mmsearch.v1 import documents_pb2, documents_pb2_grpc, retrieval_pb2, retrieval_pb2_grpc
from tests.support.indexes import build_version, lifecycle_servers, prepare_stdlib, read_records, serve_versions
from tests.support.jobs import run_job
from tests.support.loops import eventually
from tests.support.processes import start_service

SCENE, BASE = "racing", 9_500_000
ACKED = (documents_pb2.ITEM_STATUS_APPLIED, documents_pb2.ITEM_STATUS_UNCHANGED)


def doc(ident: int, text: str) -> documents_pb2.Document:
    fields = struct_pb2.Struct()
    fields.update({"question": f"live.{ident}", "answer": text})
    return documents_pb2.Document(id=ident, fields=fields)


class Writing(threading.Thread):
    """Writes until stopped; ``acked``: {id: the text of its last acknowledged upsert, or None: deleted}."""

    def __init__(self, stub, metadata):
        super().__init__(daemon=True)
        self.stub, self.metadata = stub, metadata
        self.acked: dict[int, str | None] = {}
        self.batches = 0
        self.errors: list[str] = []
        self.unsure: set[int] = set()  # ids whose last request failed after it may have reached the writer
        self.stopping = threading.Event()

    def run(self) -> None:
        n = 0
        while not self.stopping.is_set():
            n += 1
            ids = [BASE + 10 * n + k for k in range(3)]
            texts = {i: f"Live note {i}: a lighthouse keeper logs storm number {n} on the northern cape." for i in ids}
            if n > 2:  # a rewrite of an id two batches back
                old = BASE + 10 * (n - 2)
                texts[old] = f"Live note {old} rewritten: the ferry timetable for winter week {n}."
            try:
                reply = self.stub.Upsert(documents_pb2.UpsertRequest(
                    scene=SCENE, documents=[doc(i, t) for i, t in texts.items()]), metadata=self.metadata, timeout=60)
                for result in reply.results:
                    if result.status in ACKED:
                        self.acked[result.id] = texts[result.id]
                    else:
                        self.errors.append(f"{result.id}: {result.reason}")
                if n > 3:
                    gone = BASE + 10 * (n - 3) + 1
                    try:
                        self.stub.Delete(documents_pb2.DeleteRequest(scene=SCENE, ids=[gone]),
                                         metadata=self.metadata, timeout=60)
                        self.acked[gone] = None
                    except grpc.RpcError:
                        self.unsure.add(gone)  # not acknowledged, yet it may have been applied: either state is right
                        raise
            except grpc.RpcError as exc:  # not acknowledged: its ids' state is the last acknowledged one's
                self.errors.append(f"{exc.code()}: {exc.details()}")
            self.batches = n


def evidence(milvus_uri: str, mongo_uri: str, ids: set[int]) -> dict:
    """What a failing race leaves to explain it: the log position each version records and the log entries
    of ``ids`` (position, op, state), with the alias history."""
    client = connect(milvus_uri)
    try:
        positions = {name: writes_position(client, name) for name in (f"{SCENE}_1", f"{SCENE}_2")}
        history = alias_history(client, SCENE)
    finally:
        client.close()
    store = pymongo.MongoClient(mongo_uri)
    try:
        entries = [(d["_id"], d["op"], d["id"], d["state"])
                   for d in store["mmsearch"]["writes"].find({"id": {"$in": sorted(ids)[:10]}})]
    finally:
        store.close()
    return {"positions": positions, "history": history, "entries": sorted(entries)}


@pytest.fixture(scope="module")
def racing(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("racing")
    with lifecycle_servers(tmp) as (milvus, mongo):
        prepare_stdlib(tmp / "corpus", "csv,json")
        build_version(tmp / "corpus", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=minilm_repo,
                      scene=SCENE, version="1")
        build_version(tmp / "corpus", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=minilm_repo,
                      scene=SCENE, version="2", encode=False)
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1")
        token, line = mint(["write", "search"], [SCENE], name="racer")
        (tmp / "keys.jsonl").write_text(line + "\n")
        env = {"MMSEARCH_MILVUS_URI": milvus.uri, "MMSEARCH_MONGO_URI": mongo.uri,
               "MMSEARCH_MODEL_REPOSITORY": str(minilm_repo), "MMSEARCH_WRITER_SCENES": f'{{"{SCENE}": {{}}}}',
               "MMSEARCH_API_KEYS_FILE": str(tmp / "keys.jsonl"), "MMSEARCH_ANONYMOUS_SCENES": "",
               "MMSEARCH_MAX_BATCH_DOCUMENTS": "256", "MMSEARCH_WRITER_REPAIR_INTERVAL_SECONDS": "0.5"}
        writer = start_service("writer", env)
        stack = serve_versions(service_loop, tmp, SCENE, minilm_repo, milvus.uri, mongo.uri)
        channel = grpc.insecure_channel(writer.target)
        yield {"milvus": milvus, "mongo": mongo, "stack": stack, "repo": minilm_repo, "corpus": tmp / "corpus",
               "stub": documents_pb2_grpc.DocumentServiceStub(channel),
               "metadata": (("authorization", f"Bearer {token}"),)}
        channel.close()
        stack.close()
        writer.stop()


@pytest.mark.slow
def test_writes_racing_publish_and_rollback_all_end_in_the_version_serving_ends_on(racing):
    milvus, mongo = racing["milvus"], racing["mongo"]
    writing = Writing(racing["stub"], racing["metadata"])
    writing.start()
    eventually(lambda: writing.batches >= 3, "the writer thread writes", timeout=120)
    replays = []
    for args in (["--version", "2"], ["--rollback"], ["--version", "2"]):
        before = writing.batches
        result = run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--mongo-uri", mongo.uri,
                         "--model-repository", str(racing["repo"]), *args)
        replays.append(result.stdout)
        eventually(lambda: writing.batches >= before + 2, "writes go on across the publish", timeout=120)
    writing.stopping.set()
    writing.join(120)
    assert not writing.is_alive()
    acked = dict(writing.acked)
    # at least 3 + 2 x 3 batches ran (the waits above), each with 3 new ids; deletes from the fourth on
    assert len(acked) >= 27 and any(v is None for v in acked.values()), (len(acked), writing.errors[:5])
    assert all('"replayed"' in line for line in replays), replays

    client = connect(milvus.uri)
    try:
        final = resolve_alias(client, SCENE)
        assert final == f"{SCENE}_2"
        ids = sorted(acked)
        rows = {int(r["id"]) for r in client.query(final, filter=f"id in {ids}", output_fields=["id"],
                                                    consistency_level="Strong")}
    finally:
        client.close()
    store = pymongo.MongoClient(mongo.uri)
    summaries = {d["_id"]: d["answer"] for d in store["mmsearch"][final].find({"_id": {"$in": ids}})}
    store.close()
    live = {i for i, text in acked.items() if text is not None} - writing.unsure
    rows, summaries = rows - writing.unsure, {i: v for i, v in summaries.items() if i not in writing.unsure}
    assert rows == live and set(summaries) == live, (sorted(live - rows)[:10], sorted(rows - live)[:10],
                                                     writing.errors[:5], writing.batches,
                                                     evidence(milvus.uri, mongo.uri, live ^ rows))
    assert {i: summaries[i] for i in live} == {i: acked[i] for i in live}

    got = racing["stub"].Get(documents_pb2.GetRequest(scene=SCENE, ids=ids), metadata=racing["metadata"], timeout=60)
    assert {d.id: d.fields["answer"] for d in got.documents if d.id not in writing.unsure} == {i: acked[i] for i in live}
    assert set(got.missing) - writing.unsure == set(acked) - live - writing.unsure

    search = retrieval_pb2_grpc.RetrievalServiceStub(grpc.insecure_channel(racing["stack"].address))
    for ident in sorted(live)[-3:]:
        eventually(lambda: ident in [h.id for h in search.Search(
            retrieval_pb2.SearchRequest(scene=SCENE, text=acked[ident]), timeout=20).items],
            f"a search finds the acknowledged write {ident}", timeout=30)


def test_an_entry_another_model_encoded_is_re_encoded_by_the_targets_tower():
    entries = [Entry(1, "s", "upsert", 7, {"id": 7, "answer": "a"}, "h", np.ones(4, "<f4").tobytes(), "old"),
               Entry(2, "s", "delete", 8),
               Entry(3, "s", "upsert", 9, {"id": 9, "answer": "b"}, "h", np.ones(4, "<f4").tobytes(), "new")]
    seen = []

    def tower(batch):
        seen.extend(e.id for e in batch)
        return np.full((len(batch), 2), 0.5, dtype=np.float32)

    out = encoded_for(entries, "new", tower)
    assert seen == [7] and [e.model for e in out] == ["new", "", "new"]
    assert out[0].array().tolist() == [0.5, 0.5] and out[2] is entries[2]
    with pytest.raises(ReplayError, match="another model"):
        encoded_for(entries, "new", None)


def test_writes_acknowledged_before_and_during_a_full_build_are_in_the_version_it_publishes(racing):
    """A new version records no write-log position, so its publish replays the whole log: writes made
    before its build started (not in its corpus) and while it ran (between push-milvus and push-mongo)
    are all in it, and a live delete or change of a corpus document wins over the corpus's copy."""
    milvus, mongo, stub, metadata = racing["milvus"], racing["mongo"], racing["stub"], racing["metadata"]
    corpus = read_records(racing["corpus"])
    changed, deleted = int(corpus[0]["id"]), int(corpus[1]["id"])
    texts = {BASE + 900_001: "Before the build: a beekeeper counts eleven hives on the southern slope.",
             BASE + 900_002: "During the build: the night train to the glacier leaves from platform nine.",
             changed: "Changed live during the build: the observatory opens its dome at dusk."}

    def upsert(ident: int) -> None:
        fields = {**next((r for r in corpus if int(r["id"]) == ident), {"question": f"live.{ident}"}),
                  "answer": texts[ident]}
        fields.pop("id", None)
        struct = struct_pb2.Struct()
        struct.update(fields)
        reply = stub.Upsert(documents_pb2.UpsertRequest(scene=SCENE, documents=[
            documents_pb2.Document(id=ident, fields=struct)]), metadata=metadata, timeout=60)
        assert [r.status for r in reply.results] == [documents_pb2.ITEM_STATUS_APPLIED], reply

    upsert(BASE + 900_001)
    deleted_reply = stub.Delete(documents_pb2.DeleteRequest(scene=SCENE, ids=[deleted]), metadata=metadata, timeout=60)
    assert [r.status for r in deleted_reply.results] == [documents_pb2.ITEM_STATUS_APPLIED], deleted_reply
    run_job("push-milvus", "--workdir", str(racing["corpus"]), "--milvus-uri", milvus.uri, "--scene", SCENE,
            "--version", "3", "--repository", str(racing["repo"]), "--model", "minilm")
    upsert(BASE + 900_002)
    upsert(changed)
    run_job("push-mongo", "--workdir", str(racing["corpus"]), "--mongo-uri", mongo.uri, "--collection", f"{SCENE}_3")
    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "3", "--keep", "3",
            "--mongo-uri", mongo.uri, "--model-repository", str(racing["repo"]))

    name = f"{SCENE}_3"
    client = connect(milvus.uri)
    try:
        assert resolve_alias(client, SCENE) == name
        ids = sorted([*texts, deleted])
        rows = {int(r["id"]) for r in client.query(name, filter=f"id in {ids}", output_fields=["id"],
                                                    consistency_level="Strong")}
    finally:
        client.close()
    store = pymongo.MongoClient(mongo.uri)
    summaries = {d["_id"]: d["answer"] for d in store["mmsearch"][name].find({"_id": {"$in": ids}})}
    store.close()
    assert rows == set(texts) and summaries == texts, (rows, summaries)
    search = retrieval_pb2_grpc.RetrievalServiceStub(grpc.insecure_channel(racing["stack"].address))
    for ident, text in texts.items():
        eventually(lambda: ident in [h.id for h in search.Search(
            retrieval_pb2.SearchRequest(scene=SCENE, text=text), timeout=20).items],
            f"a search of version 3 finds the write {ident}", timeout=30)


def test_writes_acknowledged_in_each_window_of_a_move_are_in_the_version_it_moves_to(racing):
    """The windows of a move, forced with publish's step hook (no timing): an upsert and a delete
    acknowledged on the old version after the first replay read the log but before the alias moved, and
    an upsert acknowledged (on the new version) after the move but before the second replay, are all in
    the version the alias moved to; a move there and back leaves both versions holding every one."""
    milvus, mongo, stub, metadata = racing["milvus"], racing["mongo"], racing["stub"], racing["metadata"]
    writes = LogAccess(mongo.uri, repository=str(racing["repo"]))
    client = connect(milvus.uri)
    store = pymongo.MongoClient(mongo.uri)
    start = resolve_alias(client, SCENE)
    other = "2" if start == f"{SCENE}_1" else "1"  # a kept version that is not serving
    texts: dict[int, str | None] = {}

    def upsert(ident: int, text: str, acknowledged_on: str) -> None:
        reply = stub.Upsert(documents_pb2.UpsertRequest(scene=SCENE, documents=[doc(ident, text)]),
                            metadata=metadata, timeout=60)
        assert [r.status for r in reply.results] == [documents_pb2.ITEM_STATUS_APPLIED], reply
        assert reply.collection == acknowledged_on, (reply.collection, acknowledged_on)
        texts[ident] = text

    def delete(ident: int, acknowledged_on: str) -> None:
        reply = stub.Delete(documents_pb2.DeleteRequest(scene=SCENE, ids=[ident]), metadata=metadata, timeout=60)
        assert [r.status for r in reply.results] == [documents_pb2.ITEM_STATUS_APPLIED], reply
        assert reply.collection == acknowledged_on, (reply.collection, acknowledged_on)
        texts[ident] = None

    def held(collection: str) -> dict[int, str | None]:
        ids = sorted(texts)
        rows = {int(r["id"]) for r in client.query(collection, filter=f"id in {ids}", output_fields=["id"],
                                                    consistency_level="Strong")}
        summaries = {d["_id"]: d["answer"] for d in store["mmsearch"][collection].find({"_id": {"$in": ids}})}
        assert rows == set(summaries), (collection, rows, set(summaries))
        return {i: summaries.get(i) for i in ids}

    def move(version: str, windows: dict) -> None:
        publish_job.after_step = lambda step: windows[step]() if step in windows else None
        try:
            outcome = publish_job.publish(milvus.uri, SCENE, version, keep=3, writes=writes)
        finally:
            publish_job.after_step = None
        assert outcome["collection"] == f"{SCENE}_{version}" and resolve_alias(client, SCENE) == outcome["collection"]

    a, b = start, f"{SCENE}_{other}"
    x1, x2, x3, x4 = (BASE + 990_001 + k for k in range(4))
    try:
        move(other, {"replayed": lambda: upsert(x1, "Window one: a glassblower shapes a blue vase at noon.", a),
                     "moved": lambda: upsert(x2, "Window two: the tide tables for the harbour in March.", b)})
        assert held(b) == texts
        move(start.rsplit("_", 1)[1], {
            "replayed": lambda: (upsert(x3, "Window three: a cartographer inks the river delta.", b), delete(x1, b)),
            "moved": lambda: upsert(x4, "Window four: the bell tower rings seven times at dusk.", a)})
        assert held(a) == texts and texts[x1] is None
    finally:
        client.close()
        store.close()


def test_a_replay_records_no_position_past_a_batch_the_writer_applied_elsewhere(racing):
    """A settling replay's later passes apply only the ids they settle: a batch the writer logs after the
    first pass read the log (and applies to the live version) is not in the version replayed onto, so the
    position that version records must stay before it, or the next move onto it would skip the batch."""
    milvus, mongo, stub, metadata = racing["milvus"], racing["mongo"], racing["stub"], racing["metadata"]
    client = connect(milvus.uri)
    live = resolve_alias(client, SCENE)
    other = f"{SCENE}_2" if live == f"{SCENE}_1" else f"{SCENE}_1"
    early, late = BASE + 980_001, BASE + 980_002

    def upsert(ident: int, text: str) -> None:
        reply = stub.Upsert(documents_pb2.UpsertRequest(scene=SCENE, documents=[doc(ident, text)]),
                            metadata=metadata, timeout=60)
        assert [r.status for r in reply.results] == [documents_pb2.ITEM_STATUS_APPLIED], reply
        assert reply.collection == live, reply

    upsert(early, "Early: the orchard's apple harvest is weighed at the cider press.")
    replayer = Replayer(LogAccess(mongo.uri, repository=str(racing["repo"])), client, SCENE, other)
    read = replayer.log.since
    reads: list[int] = []

    def since(scene: str, position: int):
        entries = read(scene, position)
        if not reads:  # the writer logs (and applies to the live version) a batch right after the first read
            upsert(late, "Late: a night train leaves the mountain station with mail sacks.")
        reads.append(position)
        return entries

    replayer.log.since = since
    try:
        _, reached = replayer.run(after=replayer.position(), settle=True)
        late_seq = max(e.seq for e in read(SCENE, 0) if e.id == late)
        assert len(reads) >= 2 and reached < late_seq, (reads, reached, late_seq)
        assert writes_position(client, other) == reached
        rows = client.query(other, filter=f"id in {[early, late]}", output_fields=["id"], consistency_level="Strong")
        assert {int(r["id"]) for r in rows} == {early}
    finally:
        replayer.close()
        client.close()
