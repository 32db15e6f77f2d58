"""Index versions while serving, end to end over real sockets.

- A model exported with ``--model-version 2`` (its ONNX file under ``2/``) is
  indexed by the real jobs and served by the embedded encoder (serving reads
  the version from the model repository's manifest, not an assumed ``1``).
- Serving runs on version A; ``publish`` moves the alias to B built by the
  same model: new searches hit B, and no request fails under concurrent load
  across the move. A version C built by another model is refused (logged) and
  B keeps serving.
- Summary documents are cached per collection version; documents changed in
  place are served once the collection's sync generation moves.

Milvus is the Lite engine listening on TCP, so the job processes and the
in-process serving reach the same collections.
"""
from __future__ import annotations

import logging
import shutil
import threading

import grpc
import pytest

from mmsearch.core.model_repository import ModelRepository
from mmsearch.dev.mongo import start_mongo
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.jobs import run_job
from tests.support.loops import eventually
from tests.support.stack import MilvusServer, start_stack, t2t_config, write_config

pytestmark = pytest.mark.slow
SCENE, MODEL, OTHER = "versions", "tiny-v2", "tiny-other"


def index(workdir, modules: str, model: str, repo, milvus_uri: str, version: str, mongo_uri: str | None) -> None:
    run_job("prepare", "--workdir", str(workdir), "--source-kind", "stdlib", "--source", modules)
    run_job("encode", "--workdir", str(workdir), "--repository", str(repo), "--model", model,
            "--text-field", "answer", "--device", "cpu")
    run_job("push-milvus", "--workdir", str(workdir), "--milvus-uri", milvus_uri, "--scene", SCENE,
            "--version", version, "--repository", str(repo), "--model", model)
    if mongo_uri:
        run_job("push-mongo", "--workdir", str(workdir), "--mongo-uri", mongo_uri, "--collection", SCENE)


@pytest.fixture(scope="module")
def versions(tmp_path_factory, tiny_multilingual_source, service_loop):
    from mmsearch.jobs.export import export_model
    from tests.fixtures.models import build_tiny_multilingual

    tmp = tmp_path_factory.mktemp("versions")
    repo = tmp / "repo"
    export_model(str(tiny_multilingual_source), MODEL, str(repo), model_version=2)
    export_model(str(build_tiny_multilingual(tmp / "other-source", seed=1)), OTHER, str(repo))
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    mongo = start_mongo(":memory:", timeout=60)
    index(tmp / "a", "csv", MODEL, repo, milvus.uri, "a", mongo.uri)
    index(tmp / "b", "json", MODEL, repo, milvus.uri, "b", mongo.uri)
    index(tmp / "c", "json", OTHER, repo, milvus.uri, "c", None)
    shutil.rmtree(repo / OTHER)  # serving follows a version of another model only when it can load that model
    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "a", "--keep", "3")
    experiments = tmp / "experiments.yaml"
    write_config(experiments, t2t_config(SCENE, model=MODEL))
    stack = start_stack(service_loop, models={MODEL: str(repo / MODEL)}, experiments=experiments,
                        milvus_uri=milvus.uri, mongo_uri=mongo.uri, model_repository=str(repo))
    yield stack, milvus, repo
    stack.close()
    milvus.stop()
    mongo.stop()


def categories(stub, text: str = "read and write CSV files") -> set[str]:
    response = stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=text, top_k=5), timeout=10)
    return {item.summary["category"] for item in response.items}


def test_a_model_exported_as_version_2_is_served_by_the_embedded_encoder(versions):
    stack, _, repo = versions
    folder = ModelRepository(repo).folder(MODEL)
    assert folder.manifest.model_version == 2 and folder.onnx_path == folder.path / "2" / "model.onnx"
    assert not (folder.path / "1").exists()
    with grpc.insecure_channel(stack.address) as channel:
        assert categories(retrieval_pb2_grpc.RetrievalServiceStub(channel)) == {"csv"}


def test_serving_follows_a_publish_without_a_failed_request_and_refuses_another_model(versions, caplog):
    stack, milvus, _ = versions
    failures: list[str] = []
    served: list[set[str]] = []
    stop = threading.Event()

    def load() -> None:
        with grpc.insecure_channel(stack.address) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            while not stop.is_set():
                try:
                    served.append(categories(stub))
                except grpc.RpcError as exc:
                    failures.append(f"{exc.code().name}: {exc.details()}")

    threads = [threading.Thread(target=load) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        eventually(lambda: len(served) >= 8, "searches answered before the publish")
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "b", "--keep", "3")
        stack.wait_route(SCENE, f"{SCENE}_b", timeout=20)
        mark = len(served)
        eventually(lambda: len(served) >= mark + 8, "searches answered after the route moved")
        # A version of another model that the repository serving reads does not hold: published, but serving
        # refuses to follow it (with the model there it would load it and follow: tests/serving/test_migration.py).
        with caplog.at_level(logging.ERROR, logger="mmsearch.services.serving.pipeline.routes"):
            run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "c", "--keep", "3")
            eventually(lambda: f"not following {SCENE} -> {SCENE}_c" in caplog.text, "the refusal logged")
            stack.route_rounds(2)  # and it stays refused
    finally:
        stop.set()
        for thread in threads:
            thread.join(30)
    assert failures == []
    assert served[0] == {"csv"} and all(s == {"json"} for s in served[mark:])
    assert stack.serving.store.current.routes[SCENE] == f"{SCENE}_b"
    assert stack.serving.routes.problem == ""
    assert f"not following {SCENE} -> {SCENE}_c" in caplog.text and "does not match" in caplog.text


def test_summaries_are_cached_per_version_and_a_generation_bump_serves_documents_changed_in_place(versions):
    """The summary cache serves a document as it was until its collection's generation moves (the state
    write that ends an in-place ``sync``, see jobs/sync.py; tests/jobs/test_sync.py runs the real sync); then
    the new text."""
    import pymongo

    from mmsearch.core.milvus.connection import connect
    from mmsearch.core.milvus.record import read_manifest
    from mmsearch.core.milvus.registry_writes import update_state

    stack, milvus, _ = versions
    query = "parse a JSON document"
    with grpc.insecure_channel(stack.address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

        def first() -> tuple[int, str]:
            item = stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=query, top_k=5), timeout=10).items[0]
            return item.id, item.summary["question"]

        doc_id, question = first()
        concrete = stack.serving.store.current.routes[SCENE]
        generation = stack.serving.store.current.version(SCENE)[1]
        docs = pymongo.MongoClient(stack.serving_settings.mongo_uri)["mmsearch"][SCENE]
        docs.update_one({"_id": doc_id}, {"$set": {"question": "changed in place"}})
        try:
            assert first() == (doc_id, question)  # the same version: served from the cache
            client = connect(milvus.uri)
            try:
                update_state(client, concrete, generation=generation + 1)
                assert read_manifest(client, concrete)["generation"] == generation + 1
            finally:
                client.close()
            eventually(lambda: first() == (doc_id, "changed in place"), "the document changed in place served",
                       timeout=20, interval=0.1)
            assert stack.serving.store.current.version(SCENE)[:2] == (concrete, generation + 1)
            assert stack.serving.store.current.routes[SCENE] == concrete
        finally:
            docs.update_one({"_id": doc_id}, {"$set": {"question": question}})
