"""Impressions and Feedback over real gRPC (``feedback_stack``: serving with a known key, its event store on a
secantusd of its own): what is stored, every refusal by its status and reason, replays counted once, and the
event store going down and coming back under a running serving."""
from __future__ import annotations

import json
import secrets
import time

import grpc
import pymongo
import pytest

from mmsearch.core import events as schema
from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving.outcomes.tokens import Signer
from tests.support.events import stored
from tests.support.loops import eventually
from tests.support.metrics import sample
from tests.support.stack import search as search_scene
from tests.support.stack import stub_of

pytestmark = pytest.mark.slow
Code = grpc.StatusCode
CLICK = retrieval_pb2.FEEDBACK_EVENT_CLICK
FEEDBACK_RESULTS = "mmsearch_serving_feedback_results_total"
DROPPED = "mmsearch_serving_impressions_dropped_total"

stub = stub_of("feedback_stack")


@pytest.fixture(scope="module")
def events(feedback_stack):
    client = pymongo.MongoClient(feedback_stack.events_uri, serverSelectionTimeoutMS=5000)
    yield client[feedback_stack.database]
    client.close()


def search(stub, scene: str, user: str = "alice@example.com", **kwargs) -> retrieval_pb2.SearchResponse:
    return search_scene(stub, scene, text="read and write CSV files", user_id=user, timeout=10, **kwargs)


def feedback(stub, token: str, item: int, event=CLICK, **kwargs) -> retrieval_pb2.FeedbackResponse:
    return stub.Feedback(retrieval_pb2.FeedbackRequest(feedback_token=token, item_id=item, event=event, **kwargs),
                         timeout=10)


def refused(stub, token: str, item: int, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        feedback(stub, token, item, **kwargs)
    return err.value


def test_a_search_is_stored_as_an_impression_with_a_hashed_user(stub, feedback_stack, events):
    response = search(stub, feedback_stack.scene, force_arms={"aa1": "b"})
    assert response.impression_id and response.feedback_token.startswith("v1.")
    doc = stored(events[schema.IMPRESSIONS], {"_id": response.impression_id})[0]
    assert doc["scene"] == feedback_stack.scene and doc["arm"] == response.arm
    assert [i["id"] for i in doc["items"]] == [item.id for item in response.items]
    assert {a["layer"]: a["via"] for a in doc["assignments"]} == {"ranking": "bucket", "aa1": "forced",
                                                                  "aa2": "bucket", "aa3": "bucket"}
    assert {a["layer"]: a["default"] for a in doc["assignments"]}["ranking"] == "control"
    assert "alice" not in json.dumps(doc, default=str) and len(doc["user"]) == 32
    anonymous = search(stub, feedback_stack.scene, user="")
    assert stored(events[schema.IMPRESSIONS], {"_id": anonymous.impression_id})[0]["user"] is None


def test_a_click_is_recorded_once_however_often_it_is_sent(stub, feedback_stack, events):
    response = search(stub, feedback_stack.scene)
    item = response.items[1]
    first = feedback(stub, response.feedback_token, item.id)
    assert (first.impression_id, first.duplicate) == (response.impression_id, False)
    assert all(feedback(stub, response.feedback_token, item.id).duplicate for _ in range(3))
    docs = list(events[schema.FEEDBACK].find({"impression": response.impression_id}))
    assert len(docs) == 1 and (docs[0]["item"], docs[0]["rank"], docs[0]["event"]) == (item.id, 2, "click")
    assert docs[0]["assignments"] == {a.layer: a.arm for a in response.assignments}
    dwell = feedback(stub, response.feedback_token, item.id, retrieval_pb2.FEEDBACK_EVENT_DWELL, dwell_seconds=4.5)
    assert not dwell.duplicate  # another event on the same item is its own
    assert events[schema.FEEDBACK].find_one({"impression": response.impression_id, "event": "dwell"})[
        "dwell_seconds"] == 4.5


def test_forged_altered_expired_and_off_page_feedback_is_refused_naming_why(stub, feedback_stack):
    response = search(stub, feedback_stack.scene)
    token, item = response.feedback_token, response.items[0].id
    head, claims, ids, mac = token.split(".")
    before = sample(FEEDBACK_RESULTS, result="forged")

    altered = ".".join([head, claims, ids, ("A" if mac[0] != "A" else "B") + mac[1:]])
    error = refused(stub, altered, item)
    assert error.code() == Code.PERMISSION_DENIED and "forged or altered" in error.details()
    other_key = Signer(secrets.token_bytes(32), 600).sign(response.impression_id, feedback_stack.scene,
                                                         [(a.layer, a.arm) for a in response.assignments],
                                                         [i.id for i in response.items], int(time.time() * 1000))
    assert refused(stub, other_key, item).code() == Code.PERMISSION_DENIED
    assert sample(FEEDBACK_RESULTS, result="forged") - before == 2

    expired = Signer(feedback_stack.key.encode(), feedback_stack.ttl_s).sign(
        response.impression_id, feedback_stack.scene, [(a.layer, a.arm) for a in response.assignments],
        [i.id for i in response.items], int((time.time() - feedback_stack.ttl_s - 5) * 1000))
    error = refused(stub, expired, item)
    assert error.code() == Code.PERMISSION_DENIED and "feedback_token expired" in error.details()

    error = refused(stub, token, 424242)
    assert error.code() == Code.INVALID_ARGUMENT and "item_id 424242 was not on the page" in error.details()
    error = refused(stub, "garbage", item)
    assert error.code() == Code.INVALID_ARGUMENT and "malformed" in error.details()
    error = refused(stub, token, item, event=retrieval_pb2.FEEDBACK_EVENT_UNSPECIFIED)
    assert error.code() == Code.INVALID_ARGUMENT and error.details().startswith("feedback: event 0 is not one of")


def test_event_store_down_searches_go_on_feedback_is_unavailable_and_both_recover(stub, feedback_stack, events):
    """Impressions made during the outage wait in the buffer (dropped and counted only once it is full, see
    test_event_store.py) and are stored when the store is back; Feedback answers UNAVAILABLE meanwhile."""
    full_before = sample(DROPPED, reason="buffer_full")
    held = search(stub, feedback_stack.scene)
    feedback_stack.stop_events()
    try:
        responses = [search(stub, feedback_stack.scene, user=f"down-{i}") for i in range(5)]
        assert all(r.items and r.feedback_token for r in responses)  # searches never wait on the event store
        error = refused(stub, held.feedback_token, held.items[0].id)
        assert error.code() == Code.UNAVAILABLE and "event store" in error.details(), error.details()
    finally:
        feedback_stack.start_events()
    def recorded() -> bool:  # pymongo reconnects by itself: no restart of serving
        try:
            return not feedback(stub, held.feedback_token, held.items[0].id).duplicate
        except grpc.RpcError as exc:
            assert exc.code() == Code.UNAVAILABLE, exc.details()
            raise
    assert eventually(recorded, "feedback recorded again", interval=0.2, retry=(grpc.RpcError,))
    for response in responses:  # nothing made during the outage is lost
        assert stored(events[schema.IMPRESSIONS], {"_id": response.impression_id})[0]["scene"] == feedback_stack.scene
    after = search(stub, feedback_stack.scene, user="after")
    assert stored(events[schema.IMPRESSIONS], {"_id": after.impression_id})[0]["scene"] == feedback_stack.scene
    assert sample(DROPPED, reason="buffer_full") == full_before
