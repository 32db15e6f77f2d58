"""Feedback tokens and the Feedback call without sockets: signing, every way a token is refused, the request
checks, the impression document, and the handler's duplicate / store-down answers (fake event store)."""
from __future__ import annotations

import base64
import json
import time

import grpc
import pytest
import yaml

from mmsearch.core import events as schema
from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving.pipeline.activation import activate
from mmsearch.services.serving.errors import StageError, Unavailable
from mmsearch.services.serving.config.experiments import parse_config
from mmsearch.services.serving.outcomes.feedback import FeedbackHandler, Impressions, validate_feedback, via
from mmsearch.services.serving.pipeline.search import Searcher
from mmsearch.services.serving.config.settings import ServingSettings
from mmsearch.services.serving.outcomes.tokens import Signer, TokenError
from tests.support.fakes import FakeEvents, collection_manifest, fake_backends, manifest
from tests.support.stack import t2t_config

Code = grpc.StatusCode
KEY = b"k" * 32
NOW_MS = 1_700_000_000_000
IDS = [11, 22, 2**53 + 5, 44]


def token(signer: Signer | None = None, issued_ms: int = NOW_MS, ids=IDS) -> str:
    return (signer or Signer(KEY, 3600)).sign("imp-1", "t2t", [("ranking", "control"), ("aa", "b")], ids, issued_ms)


def refused(token_text: str, now_ms: int = NOW_MS, signer: Signer | None = None) -> TokenError:
    with pytest.raises(TokenError) as err:
        (signer or Signer(KEY, 3600)).verify(token_text, now_ms)
    return err.value


def test_a_token_round_trips_its_claims():
    claims = Signer(KEY, 3600).verify(token(), NOW_MS + 1000)
    assert (claims.impression_id, claims.scene, claims.issued_ms) == ("imp-1", "t2t", NOW_MS)
    assert claims.assignments == (("ranking", "control"), ("aa", "b"))
    assert claims.item_ids == tuple(IDS) and claims.rank_of(2**53 + 5) == 3


def _swap(text: str, part: int, data: bytes) -> str:
    parts = text.split(".")
    parts[part] = base64.urlsafe_b64encode(data).rstrip(b"=").decode()
    return ".".join(parts)


@pytest.mark.parametrize("alter", [
    pytest.param(lambda t: _swap(t, 1, json.dumps({"i": "imp-1", "s": "t2t", "a": [["ranking", "threshold"]],
                                                   "t": NOW_MS}).encode()), id="arm-changed"),
    pytest.param(lambda t: _swap(t, 2, (99).to_bytes(8, "little")), id="items-changed"),
    pytest.param(lambda t: t[:-2] + ("AA" if not t.endswith("AA") else "BB"), id="mac-changed"),
    pytest.param(lambda t: ".".join(t.split(".")[:3] + [""]), id="mac-removed"),
    pytest.param(lambda t: token(Signer(b"another key of 32 bytes........."[:32], 3600)), id="other-key"),
])
def test_forged_or_altered_tokens_are_permission_denied(alter):
    error = refused(alter(token()))
    assert error.code == Code.PERMISSION_DENIED and error.reason == "forged"
    assert "forged or altered" in str(error)


@pytest.mark.parametrize("text, words", [
    ("", "feedback_token is empty"),
    ("not a token", "malformed"),
    ("v2.a.b.c", "malformed"),
    ("v1.a.b", "malformed"),
    ("v1.é.b.c", "malformed"),
    ("v1." + "a" * 300_000 + ".b.c", "at most 262144"),
])
def test_malformed_tokens_are_invalid_argument(text, words):
    error = refused(text)
    assert error.code == Code.INVALID_ARGUMENT and words in str(error)


def test_expired_and_future_tokens_are_permission_denied():
    error = refused(token(), now_ms=NOW_MS + 3601 * 1000)
    assert error.code == Code.PERMISSION_DENIED and error.reason == "expired"
    assert "expired: issued 3601 s ago" in str(error) and "MMSEARCH_FEEDBACK_TTL_SECONDS" in str(error)
    assert Signer(KEY, 3600).verify(token(), NOW_MS + 3600 * 1000).impression_id == "imp-1"  # the last second
    error = refused(token(issued_ms=NOW_MS + 3_600_000), now_ms=NOW_MS)
    assert error.code == Code.PERMISSION_DENIED and "in the future" in str(error)


def test_an_item_not_on_the_page_is_invalid_argument_naming_the_page():
    claims = Signer(KEY, 3600).verify(token(), NOW_MS)
    with pytest.raises(TokenError) as err:
        claims.rank_of(33)
    assert err.value.code == Code.INVALID_ARGUMENT and err.value.reason == "not_on_page"
    assert "item_id 33 was not on the page of impression imp-1" in str(err.value) and "[11, 22" in str(err.value)


def test_a_short_key_is_refused_and_an_unset_key_is_random_per_process(caplog):
    with pytest.raises(ValueError, match="at least 16 bytes"):
        Signer(b"short", 60)
    with caplog.at_level("WARNING"):
        a, b = Signer.from_settings("", "", 60), Signer.from_settings("", "", 60)
    assert "MMSEARCH_FEEDBACK_KEY is not set" in caplog.text
    assert refused(token(a), signer=b).reason == "forged"  # another process's key
    keyed = Signer.from_settings("x" * 16, "", 60)
    assert keyed.verify(token(Signer.from_settings("x" * 16, "", 60)), NOW_MS).scene == "t2t"


def test_settings_refuse_a_short_key_without_echoing_it_and_a_token_outliving_its_events():
    from mmsearch.core.settings import SettingsError, load_settings

    with pytest.raises(SettingsError) as err:
        load_settings(ServingSettings, feedback={"key": "hunter2"})
    assert "MMSEARCH_FEEDBACK_KEY" in str(err.value) and "at least 16" in str(err.value)
    assert "hunter2" not in str(err.value)
    with pytest.raises(SettingsError, match="MMSEARCH_FEEDBACK_TTL_SECONDS.*outlive"):
        load_settings(ServingSettings, events={"ttl_days": 1}, feedback={"ttl_seconds": 2 * 86400})


@pytest.mark.parametrize("fields, words", [
    ({}, "event 0 is not one of"),
    ({"event": 9}, "event 9 is not one of"),
    ({"event": retrieval_pb2.FEEDBACK_EVENT_DWELL}, "dwell_seconds 0.0 is out of range"),
    ({"event": retrieval_pb2.FEEDBACK_EVENT_DWELL, "dwell_seconds": -1}, "out of range"),
    ({"event": retrieval_pb2.FEEDBACK_EVENT_DWELL, "dwell_seconds": float("nan")}, "out of range"),
    ({"event": retrieval_pb2.FEEDBACK_EVENT_DWELL, "dwell_seconds": 1e9}, "out of range"),
    ({"event": retrieval_pb2.FEEDBACK_EVENT_CLICK, "dwell_seconds": 3}, "only dwell events carry it"),
])
def test_request_fields_are_checked_naming_the_field(fields, words):
    with pytest.raises(StageError) as err:
        validate_feedback(retrieval_pb2.FeedbackRequest(**fields))
    assert err.value.code == Code.INVALID_ARGUMENT and words in err.value.message


def test_via_tells_randomized_from_forced_and_anonymous():
    assert via("ranking", "u1", {}) == "bucket"
    assert via("ranking", "u1", {"ranking": "control"}) == "forced"
    assert via("ranking", "", {}) == "default"


def test_an_impression_document_hashes_the_user_and_never_stores_the_id():
    recorded: list[dict] = []
    signer = Signer(KEY, 3600)
    impressions = Impressions(signer, recorded.append, clock=lambda: NOW_MS / 1000)
    impression_id, text = impressions.issue(scene="t2t", label="ranking=threshold", kind="text",
                                            layers=[("ranking", "threshold", "control")], user_id="alice@example.com",
                                            force_arms={}, item_ids=[5, 7])
    doc = recorded[0]
    assert doc["_id"] == impression_id and signer.verify(text, NOW_MS).impression_id == impression_id
    assert doc["items"] == [{"id": 5, "rank": 1}, {"id": 7, "rank": 2}]
    assert doc["assignments"] == [{"layer": "ranking", "arm": "threshold", "default": "control", "via": "bucket"}]
    assert "alice" not in json.dumps(doc, default=str)
    assert doc["user"] == schema.user_hash(signer.user_salt, "alice@example.com") and len(doc["user"]) == 32
    assert schema.user_hash(b"other salt", "alice@example.com") != doc["user"]


async def test_the_handler_records_once_and_maps_the_store_down_to_unavailable():
    signer = Signer(KEY, 3600)
    store = FakeEvents()
    handler = FeedbackHandler(signer, store, enabled=True, clock=lambda: NOW_MS / 1000)
    click = retrieval_pb2.FeedbackRequest(feedback_token=token(signer), item_id=22,
                                          event=retrieval_pb2.FEEDBACK_EVENT_CLICK)
    first = await handler.submit(click, 1.0)
    again = await handler.submit(click, 1.0)
    assert (first.impression_id, first.duplicate, again.duplicate) == ("imp-1", False, True)
    assert list(store.feedback_docs) == [schema.feedback_id("imp-1", 22, "click")]
    doc = store.feedback_docs[schema.feedback_id("imp-1", 22, "click")]
    assert (doc["rank"], doc["assignments"], doc["scene"]) == (2, {"ranking": "control", "aa": "b"}, "t2t")
    store.fail = Unavailable("the event store at mongodb://x is unreachable: refused")
    with pytest.raises(StageError) as err:
        await handler.submit(click, 1.0)
    assert err.value.code == Code.UNAVAILABLE and "event store" in err.value.message
    off = FeedbackHandler(signer, store, enabled=False)
    with pytest.raises(StageError) as err:
        await off.submit(click, 1.0)
    assert err.value.code == Code.FAILED_PRECONDITION and "MMSEARCH_IMPRESSIONS=false" in err.value.message



async def test_a_search_response_is_an_impression_recorded_in_the_event_store():
    b, _ = fake_backends(models={"m": manifest("m")}, collections={"docs": collection_manifest("m", "docs_1")})
    active = await activate(parse_config(yaml.safe_dump(t2t_config("docs", model="m"))), b, timeout=1.0)
    signer = Signer(KEY, 3600)
    searcher = Searcher(b, ServingSettings(), down={}, impressions=Impressions(signer, b.events.record))
    response = await searcher.search(retrieval_pb2.SearchRequest(scene="docs", text="csv", user_id="u7"), active, 1.0)
    claims = signer.verify(response.feedback_token, int(time.time() * 1000))
    assert claims.impression_id == response.impression_id and claims.scene == "docs"
    assert claims.item_ids == tuple(item.id for item in response.items)
    assert claims.assignments == tuple((a.layer, a.arm) for a in response.assignments)
    [doc] = b.events.impressions
    assert doc["_id"] == response.impression_id and doc["arm"] == response.arm and doc["query"] == "text"
    plain = await Searcher(b, ServingSettings(), down={}).search(
        retrieval_pb2.SearchRequest(scene="docs", text="csv"), active, 1.0)
    assert (plain.impression_id, plain.feedback_token) == ("", "") and len(b.events.impressions) == 1


def test_a_changed_padding_bit_of_the_signature_is_an_altered_token():
    """The last base64 character of the MAC carries unused bits: flipping one decodes to the same bytes."""
    text = token()
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    same_bytes = alphabet[alphabet.index(text[-1]) ^ 1]  # 43 characters for 32 bytes: the low 2 bits are padding
    assert base64.urlsafe_b64decode(text.split(".")[3] + "=") == base64.urlsafe_b64decode(
        text.split(".")[3][:-1] + same_bytes + "=")
    with pytest.raises(TokenError) as caught:
        Signer(KEY, 3600).verify(text[:-1] + same_bytes, NOW_MS)
    assert caught.value.code == grpc.StatusCode.PERMISSION_DENIED
