"""End to end over real sockets: preprocess + serving on the stdlib index built by the offline jobs (real MiniLM)."""
from __future__ import annotations

import threading

import grpc
import pytest
import yaml

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.fixtures.servers import STDLIB_INDEX_TEXT_FIELD
from tests.support.loops import eventually
from tests.support.stack import stub_of, t2t_config, write_config

pytestmark = pytest.mark.slow


stub = stub_of("search_stack")


def test_t2t_finds_the_csv_module(stub, stdlib_index):
    response = stub.Search(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text="read and write CSV files",
                                                       top_k=5), timeout=10)
    assert response.items, response
    assert "csv" in [item.summary["category"] for item in response.items[:3]]
    assert [t.stage for t in response.timings] == ["preprocess", "embed", "match", "rank", "summary"]
    scores = [item.score for item in response.items]
    assert scores == sorted(scores, reverse=True)
    assert response.arm == "ranking=control"  # no user id: the default arm


def test_same_user_same_arm_and_force(stub, stdlib_index):
    request = retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text="regular expressions", user_id="alice")
    arms = {stub.Search(request, timeout=10).arm for _ in range(3)}
    assert len(arms) == 1
    forced = stub.Search(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text="regular expressions",
                                                     force_arms={"ranking": "threshold"}), timeout=10)
    assert forced.arm == "ranking=threshold"


def test_diversify_switches_to_mmr(stub, stdlib_index):
    plain = stub.Search(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text="json", top_k=5), timeout=10)
    diverse = stub.Search(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text="json", top_k=5,
                                                      diversify=True), timeout=10)
    assert diverse.items[0].id == plain.items[0].id  # the most relevant still leads
    # MMR's ranking score is its objective, not the similarity
    assert any(abs(i.score - i.retrieval_score) > 1e-6 for i in diverse.items)


@pytest.mark.parametrize("request_kwargs, message", [
    ({"text": ""}, "text is empty"),
    ({"text": "x" * 5000}, "at most"),
    ({"text": "x", "top_k": 1000}, "top_k 1000 is out of range"),
    ({"text": "x", "top_k": -1}, "top_k -1 is out of range"),
    ({"image": b"not an image"}, "does not accept image queries"),
    ({}, "give a query"),
    ({"text": "x", "force_arms": {"nope": "a"}}, "unknown layer"),
])
def test_bad_input_is_invalid_argument(stub, stdlib_index, request_kwargs, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, **request_kwargs), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in err.value.details()


def test_unknown_scene_is_invalid_argument(stub):
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(retrieval_pb2.SearchRequest(scene="nope", text="x"), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "unknown scene 'nope'" in err.value.details()


def test_list_scenes(stub, stdlib_index):
    scenes = stub.ListScenes(retrieval_pb2.ListScenesRequest(), timeout=10).scenes
    assert [(s.name, s.modality, list(s.layers)) for s in scenes] == [(stdlib_index.scene, "text", ["ranking"])]
    assert list(scenes[0].text_fields) == [STDLIB_INDEX_TEXT_FIELD]  # encode's --text-field, recorded by push-milvus


def test_reload_shifts_traffic_without_a_failed_request_and_bad_config_is_refused(stdlib_stack, stdlib_index):
    """Requests run in a loop while the config moves all users to the other arm, then a broken file lands."""
    path = stdlib_stack.serving_settings.experiments
    scene = stdlib_index.scene
    channel = grpc.insecure_channel(stdlib_stack.address)
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    seen: list[str] = []
    failures: list[Exception] = []
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                seen.append(stub.Search(retrieval_pb2.SearchRequest(scene=scene, text="sqlite database",
                                                                    user_id=f"u{i}"), timeout=10).arm)
            except Exception as exc:  # any failure fails the test
                failures.append(exc)
            i += 1

    original = yaml.safe_load(path.read_text())
    threads = [threading.Thread(target=load) for _ in range(3)]
    try:
        write_config(path, t2t_config(scene, model=stdlib_index.model, weights=(100, 0)))
        eventually(lambda: stdlib_stack.serving.store.current.scenes[scene].layers[0].weights == (100, 0),
                   "the reweighted config active")
        for t in threads:
            t.start()
        eventually(lambda: len(seen) >= 10, "10 searches answered")
        assert set(seen) == {"ranking=control"}
        write_config(path, t2t_config(scene, model=stdlib_index.model, weights=(0, 100)))
        eventually(lambda: seen[-5:] == ["ranking=threshold"] * 5, "five searches in a row on the threshold arm")
        good = stdlib_stack.serving.store.digest
        write_config(path, "scenes: {" + scene + ": {modality: text, defaults: {}}}")
        eventually(lambda: stdlib_stack.serving.store.last_error != "", "the broken config refused")
        count = len(seen)
        eventually(lambda: len(seen) >= count + 5, "five more searches answered")
        assert seen[-1] == "ranking=threshold" and stdlib_stack.serving.store.digest == good
        assert "query" in stdlib_stack.serving.store.last_error  # names what is missing
    finally:
        stop.set()
        for t in threads:
            if t.is_alive():
                t.join(10)
        write_config(path, original)
        eventually(lambda: stdlib_stack.serving.store.last_error == "", "the original config active again")
        channel.close()
    assert not failures, failures[:3]


def test_concurrent_queries_each_get_their_own_results(stub, stdlib_index):
    """Concurrent requests share Tokenize, inference and Milvus calls; each still gets its own page."""
    queries = ["read and write CSV files", "regular expressions", "sqlite database", "gzip compression",
               "temporary files", "parse command line arguments", "base64 encoding", "json", "uuid",
               "http client", "zip archives", "threads", "sockets", "random numbers", "hash digests", "logging"]
    expected = [[i.id for i in stub.Search(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text=q),
                                           timeout=10).items] for q in queries]
    for _ in range(3):
        futures = [stub.Search.future(retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text=q), timeout=10)
                   for q in queries]
        assert [[i.id for i in f.result().items] for f in futures] == expected
