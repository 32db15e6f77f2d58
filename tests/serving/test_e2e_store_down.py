"""The document store down under a running serving: once the health probe finds it down, a search that needs
a summary and a feedback answer UNAVAILABLE at once, naming their stage (they used to wait out ~90% of their
deadline although the connection is refused at once), and both work again once the store is back.

Serving here runs on the stdlib index's vectors with its summaries and events on a secantusd of its own
(on disk, a fixed port), so the test can stop it and start it again; no summary cache, so every search
reads the store.
"""
from __future__ import annotations

import grpc
import pytest

from mmsearch.v1 import retrieval_pb2
from tests.support.jobs import run_job
from tests.support.loops import eventually
from tests.support.stack import retrieval_stub, start_stack, t2t_config, write_config
from tests.support.stack import search as search_scene

pytestmark = pytest.mark.slow

SCENE = "storedown"
LONG_DEADLINE_S = 60.0  # a call that waited on the store would wait most of this


@pytest.fixture(scope="module")
def store_down(stdlib_index, service_loop, tmp_path_factory):
    from mmsearch.dev.mongo import start_mongo
    from mmsearch.dev.processes import free_port

    tmp = tmp_path_factory.mktemp("store-down")
    port = free_port()
    mongo = start_mongo(tmp / "mongo", port=port, timeout=60)
    run_job("push-mongo", "--workdir", str(stdlib_index.workdir), "--mongo-uri", mongo.uri, "--collection", SCENE)
    experiments = tmp / "experiments.yaml"
    config = t2t_config(SCENE, model=stdlib_index.model, collection=stdlib_index.scene)
    config["scenes"][SCENE]["defaults"]["summary"]["collection"] = SCENE
    write_config(experiments, config)
    repo = str(stdlib_index.repository)
    stack = start_stack(service_loop, models={stdlib_index.model: f"{repo}/{stdlib_index.model}"},
                        experiments=experiments, milvus_uri=str(stdlib_index.milvus_uri), mongo_uri=mongo.uri,
                        model_repository=repo, summary_cache_documents=0)
    stack.extra.update(mongo=mongo, start=lambda: start_mongo(tmp / "mongo", port=port, timeout=60))
    try:
        with retrieval_stub(stack.address) as stub:
            yield stack, stub
    finally:
        stack.close()
        stack.extra["mongo"].stop()


def search(stub, text: str = "read and write CSV files"):
    return search_scene(stub, SCENE, text=text, timeout=LONG_DEADLINE_S)


def test_searches_and_feedback_fail_fast_while_the_store_is_down(store_down):
    stack, stub = store_down
    first = search(stub)
    assert first.items and first.feedback_token
    stack.extra["mongo"].stop()
    try:
        eventually(lambda: "mongo" in stack.serving.health.down, "the health probe finding the store down")
        # The event store is probed in the same round by a client of its own, which can find it down a round later.
        eventually(lambda: stack.serving.backends.events.down, "the event store's probe finding it down")
        with pytest.raises(grpc.RpcError) as caught:
            search(stub, text="open a TCP socket and listen")
        error = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert error.details().startswith("summary: the summary store at mongodb://127.0.0.1:"), error.details()
        assert "is down" in error.details() and "answering at once" in error.details()

        with pytest.raises(grpc.RpcError) as caught:
            stub.Feedback(retrieval_pb2.FeedbackRequest(
                feedback_token=first.feedback_token, item_id=first.items[0].id,
                event=retrieval_pb2.FEEDBACK_EVENT_CLICK), timeout=LONG_DEADLINE_S)
        error = caught.value
        assert error.code() == grpc.StatusCode.UNAVAILABLE, error.details()
        assert error.details().startswith("feedback: the event store at mongodb://127.0.0.1:"), error.details()
        assert "is down" in error.details()
    finally:
        stack.extra["mongo"] = stack.extra["start"]()
    eventually(lambda: "mongo" not in stack.serving.health.down, "the health probe finding the store back")
    eventually(lambda: not stack.serving.backends.events.down, "the event store's probe finding it back")
    assert eventually(lambda: search(stub).items, "a search answered", retry=(grpc.RpcError,))
    response = stub.Feedback(retrieval_pb2.FeedbackRequest(
        feedback_token=first.feedback_token, item_id=first.items[0].id, event=retrieval_pb2.FEEDBACK_EVENT_CLICK),
        timeout=LONG_DEADLINE_S)
    assert response.impression_id == first.impression_id
