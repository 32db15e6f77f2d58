"""API keys at serving's gRPC door, from a raw gRPC client: every scope and scene rule, rates, relaying, a key
removed from the key file, and no key text in any error, log line or metric (the ``keyed_stack``: two replicas
sharing one key file, anonymous access off)."""
from __future__ import annotations

import logging
import urllib.request

import grpc
import pytest

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.loops import eventually

Code = grpc.StatusCode


def call(address: str, method: str, request, key: str | None = None, extra=()):
    metadata = ((("authorization", f"Bearer {key}"),) if key else ()) + tuple(extra)
    with grpc.insecure_channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        return getattr(stub, method).with_call(request, metadata=metadata, timeout=30)


def refused(address: str, method: str, request, key: str | None = None, extra=()) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as err:
        call(address, method, request, key, extra)
    return err.value


def search(scene: str) -> retrieval_pb2.SearchRequest:
    return retrieval_pb2.SearchRequest(scene=scene, text="read and write CSV files", top_k=3)


def test_no_key_and_bad_keys_are_unauthenticated(keyed_stack):
    s = keyed_stack
    err = refused(s.address, "Search", search(s.scene))
    assert err.code() == Code.UNAUTHENTICATED and "an API key is required" in err.details()
    forged = s.keys["search"][:-4] + "AAAA"
    err = refused(s.address, "Search", search(s.scene), forged)
    key_id = s.keys["search"].split("_")[1]
    assert err.code() == Code.UNAUTHENTICATED and f"key id {key_id} is unknown or its secret does not match" in err.details()
    assert refused(s.address, "Search", search(s.scene), "not-a-key").code() == Code.UNAUTHENTICATED
    err = refused(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), extra=[("authorization", "Basic abc")])
    assert err.code() == Code.UNAUTHENTICATED and "Bearer <key>" in err.details()


def test_scopes_and_scenes(keyed_stack):
    s = keyed_stack
    response, _ = call(s.address, "Search", search(s.scene), s.keys["search"])
    assert response.items
    err = refused(s.address, "Search", search(s.scene), s.keys["feedback"])
    assert err.code() == Code.PERMISSION_DENIED and "lacks the scope 'search'" in err.details()
    err = refused(s.address, "Search", search(s.scene), s.keys["elsewhere"])
    assert err.code() == Code.PERMISSION_DENIED
    assert f"may not touch scene {s.scene!r} (allowed scenes: other)" in err.details()
    err = refused(s.address, "Feedback", retrieval_pb2.FeedbackRequest(
        feedback_token=response.feedback_token, item_id=response.items[0].id, event=retrieval_pb2.FEEDBACK_EVENT_CLICK), s.keys["search"])
    assert err.code() == Code.PERMISSION_DENIED and "lacks the scope 'feedback'" in err.details()
    err = refused(s.address, "Feedback", retrieval_pb2.FeedbackRequest(
        feedback_token=response.feedback_token, item_id=response.items[0].id, event=retrieval_pb2.FEEDBACK_EVENT_CLICK), s.keys["elsewhere"])
    assert err.code() == Code.PERMISSION_DENIED and f"may not touch scene {s.scene!r}" in err.details()
    scenes, _ = call(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), s.keys["elsewhere"])
    assert [sc.name for sc in scenes.scenes] == []  # only the scenes the key may touch
    scenes, _ = call(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), s.keys["search"])
    assert [sc.name for sc in scenes.scenes] == [s.scene]
    assert refused(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), s.keys["relay"]).code() == \
        Code.PERMISSION_DENIED  # a relay key alone searches nothing


def test_a_page_and_feedback_token_minted_by_one_replica_works_on_the_other(keyed_stack):
    s = keyed_stack
    first, second = (r.address for r in s.replicas)
    page1, _ = call(first, "Search", search(s.scene), s.keys["full"])
    page2, _ = call(second, "Search", retrieval_pb2.SearchRequest(scene=s.scene, text="read and write CSV files",
                                                                  top_k=3, page_token=page1.next_page_token),
                    s.keys["full"])
    assert page2.items and not {i.id for i in page1.items} & {i.id for i in page2.items}
    reply, _ = call(second, "Feedback", retrieval_pb2.FeedbackRequest(
        feedback_token=page1.feedback_token, item_id=page1.items[0].id, event=retrieval_pb2.FEEDBACK_EVENT_CLICK), s.keys["full"])
    assert reply.impression_id


def test_over_its_rate_a_key_is_resource_exhausted_with_retry_after(keyed_stack):
    s = keyed_stack
    codes = []
    for _ in range(3):
        try:
            call(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), s.keys["slow"])
            codes.append(Code.OK)
        except grpc.RpcError as err:
            codes.append(err.code())
            last = err
    assert codes == [Code.OK, Code.OK, Code.RESOURCE_EXHAUSTED]
    assert "over its rate (0.01/s, burst 2)" in last.details()
    assert int(dict(last.trailing_metadata())["retry-after"]) >= 1


def test_relaying_needs_the_relay_scope_and_a_known_caller(keyed_stack):
    s = keyed_stack
    as_full = [("x-mmsearch-caller", s.keys["full"].split("_")[1])]
    response, _ = call(s.address, "Search", search(s.scene), s.keys["relay"], as_full)
    assert response.items
    err = refused(s.address, "Search", search(s.scene), s.keys["search"], as_full)
    assert err.code() == Code.PERMISSION_DENIED and "only from a key with scope 'relay'" in err.details()
    err = refused(s.address, "Search", search(s.scene), s.keys["relay"], [("x-mmsearch-caller", "0123456789ab")])
    assert err.code() == Code.UNAUTHENTICATED and "not in this service's key file" in err.details()
    err = refused(s.address, "Search", search(s.scene), s.keys["relay"], [("x-mmsearch-caller", "anonymous")])
    assert err.code() == Code.UNAUTHENTICATED and "anonymous access is off" in err.details()
    as_elsewhere = [("x-mmsearch-caller", s.keys["elsewhere"].split("_")[1])]
    assert refused(s.address, "Search", search(s.scene), s.keys["relay"], as_elsewhere).code() == \
        Code.PERMISSION_DENIED  # the relayed key's scenes apply


def test_health_stays_public(keyed_stack):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(keyed_stack.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_a_key_removed_from_the_file_stops_working_and_comes_back(keyed_stack):
    s = keyed_stack
    everyone = list(s.lines)
    s.write_keys([r for r in everyone if r != "search"])
    try:
        eventually(lambda: all(refused(r.address, "ListScenes", retrieval_pb2.ListScenesRequest(),
                                       s.keys["search"]).code() == Code.UNAUTHENTICATED for r in s.replicas),
                   "the removed key refused by both replicas", retry=(pytest.fail.Exception,))
        assert call(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), s.keys["full"])[0].scenes
    finally:
        s.write_keys(everyone)
    eventually(lambda: call(s.address, "ListScenes", retrieval_pb2.ListScenesRequest(), s.keys["search"]),
               "the key valid again", retry=(grpc.RpcError,))


def test_refusals_are_audited_and_no_key_text_leaks(keyed_stack, caplog):
    s = keyed_stack
    port = s.replicas[0].serving.running.metrics_port
    with caplog.at_level(logging.INFO):
        details = [refused(s.address, "Search", search(s.scene), key).details()
                   for key in (s.keys["feedback"], s.keys["search"][:-3] + "xyz", None)]
        call(s.address, "Search", search(s.scene), s.keys["search"])
    audits = [r for r in caplog.records if r.name == "mmsearch.audit"]
    assert {(r.key_id, r.outcome) for r in audits} >= {(s.keys["feedback"].split("_")[1], "forbidden"),
                                                       ("invalid", "unauthenticated"),
                                                       ("anonymous", "unauthenticated")}
    assert all(r.action == "search" and r.scene == s.scene for r in audits)
    metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    assert 'mmsearch_audit_events_total{action="search",key_id="invalid",outcome="unauthenticated"}' in metrics
    text = "\n".join([*details, caplog.text, metrics, *(str(r.__dict__) for r in caplog.records)])
    for key in s.keys.values():
        assert key.split("_", 2)[2] not in text  # the secret part of every key
