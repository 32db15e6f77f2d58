"""POST /api/feedback against the real serving stack: clicks recorded once, every bad body named, serving's
refusals passed on with their HTTP status, per-client rate limiting, serving down; the limiter itself."""
from __future__ import annotations

import json

import pytest
import requests

from mmsearch.core.access.ratelimit import RateLimiter, client_address, parse_networks
from tests.support.web import TIMEOUT, WebThread, assert_error, get, web_settings


def post(web, body, content_type: str = "text/plain;charset=UTF-8", headers: dict | None = None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(web.url + "/api/feedback", data=data, timeout=TIMEOUT,
                         headers={"Content-Type": content_type, **(headers or {})})


@pytest.fixture
def page_json(web, stack_scene) -> dict:
    body = get(web, "/api/search", scene=stack_scene.name, q=stack_scene.query, user="carol").json()
    assert body["impression_id"] and body["feedback_token"] and body["items"]
    return body


def test_a_click_is_recorded_once(web, page_json):
    click = {"feedback_token": page_json["feedback_token"], "item_id": page_json["items"][0]["id"], "event": "click"}
    first = post(web, click)
    assert first.status_code == 200, first.text
    assert first.json() == {"impression_id": page_json["impression_id"], "duplicate": False}
    assert post(web, click, "application/json").json()["duplicate"] is True
    dwell = post(web, {**click, "item_id": str(click["item_id"]), "event": "dwell", "dwell_seconds": 2.5})
    assert dwell.status_code == 200 and dwell.json()["duplicate"] is False


@pytest.mark.parametrize("body, parameter, words", [
    (b"not json", "body", "must be a JSON object"),
    ([1, 2], "body", "must be a JSON object"),
    ({"item_id": 1, "event": "click"}, "feedback_token", "feedback_token is required"),
    ({"feedback_token": "TOKEN", "item_id": -3, "event": "click"}, "item_id", "non-negative integer"),
    ({"feedback_token": "TOKEN", "item_id": "12a", "event": "click"}, "item_id", "non-negative integer"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": "like"}, "event", "one of ['click', 'dwell', 'skip']"),
    # Once 500s: str.isdigit() is true for these, and int() fails or reads another script's digits.
    ({"feedback_token": "TOKEN", "item_id": "\u00b2", "event": "click"}, "item_id", "non-negative integer"),
    ({"feedback_token": "TOKEN", "item_id": "\u0661\u0662", "event": "click"}, "item_id", "non-negative integer"),
    ({"feedback_token": "TOKEN", "item_id": "9" * 20, "event": "click"}, "item_id", "non-negative integer"),
    ({"feedback_token": "TOKEN", "item_id": 1.0, "event": "click"}, "item_id", "non-negative integer"),
    # Once 500s: an unhashable event.
    ({"feedback_token": "TOKEN", "item_id": 1, "event": ["click"]}, "event", "one of ['click', 'dwell', 'skip']"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": {"click": 1}}, "event", "one of ['click', 'dwell', 'skip']"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": 1}, "event", "one of ['click', 'dwell', 'skip']"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": "dwell", "dwell_seconds": 10**400}, "dwell_seconds",
     "> 0 for a dwell event"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": "dwell", "dwell_seconds": [1]}, "dwell_seconds",
     "> 0 for a dwell event"),
    ({"feedback_token": ["TOKEN"], "item_id": 1, "event": "click"}, "feedback_token", "feedback_token is required"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": "dwell"}, "dwell_seconds", "> 0 for a dwell event"),
    ({"feedback_token": "TOKEN", "item_id": 1, "event": "click", "dwell_seconds": 3}, "dwell_seconds",
     "only for dwell events"),
])
def test_bad_bodies_are_400_naming_the_field(web, page_json, body, parameter, words):
    if isinstance(body, dict) and body.get("feedback_token") == "TOKEN":
        body = {**body, "feedback_token": page_json["feedback_token"]}
    assert_error(post(web, body), 400, parameter, words)


def test_serving_refusals_keep_their_meaning(web, page_json):
    token = page_json["feedback_token"]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    error = assert_error(post(web, {"feedback_token": forged, "item_id": page_json["items"][0]["id"],
                                    "event": "click"}), 403, "feedback_token", "forged or altered")
    assert error["code"] == "permission_denied"
    assert_error(post(web, {"feedback_token": token, "item_id": 9, "event": "click"}), 400, "item_id",
                 "was not on the page")
    assert_error(post(web, {"feedback_token": token, "item_id": 9, "event": "click"}, "image/png"), 415, "body",
                 "takes a JSON body")
    assert_error(post(web, {"feedback_token": "x" * 3500, "item_id": 9, "event": "click"}), 400,
                 "feedback_token", "feedback_token has 3500 characters")  # longer than a page of max_top_k items
    assert_error(post(web, {"feedback_token": "x" * 5000, "item_id": 9, "event": "click"}), 413, "body",
                 "larger than")


def test_each_client_is_rate_limited_on_its_own(serving_address, page_json):
    settings = web_settings(serving_address, feedback={"burst": 3, "rate_per_second": 0.01},
                            client={"trusted_proxies": "127.0.0.1"})  # the test client is the trusted proxy
    click = {"feedback_token": page_json["feedback_token"], "item_id": page_json["items"][0]["id"], "event": "click"}
    with WebThread(settings) as limited:
        a = {"X-Forwarded-For": "203.0.113.9, 10.0.0.1"}
        codes = [post(limited, click, headers=a).status_code for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        refused = post(limited, click, headers=a)
        error = assert_error(refused, 429, None, "too many feedback events from 10.0.0.1")
        assert error["code"] == "rate_limited"
        assert error["request_id"] == refused.headers["X-Request-Id"]  # once missing from 429 bodies
        assert int(post(limited, click, headers=a).headers["Retry-After"]) >= 1
        assert post(limited, click, headers={"X-Forwarded-For": "10.0.0.2"}).status_code == 200


def test_serving_down_is_503_saying_feedback_is_unavailable(web_down):
    """Once "search is temporarily unavailable" for a feedback event."""
    assert_error(post(web_down, {"feedback_token": "v1.a.b.c", "item_id": 1, "event": "click"}), 503, None,
                 "feedback is temporarily unavailable; try again shortly")


def test_the_limiter_refills_and_forgets_the_oldest_clients():
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, max_clients=2, clock=lambda: now[0])
    assert [limiter.allow("a")[0] for _ in range(3)] == [True, True, False]
    assert limiter.allow("a")[1] == pytest.approx(0.5)
    now[0] = 0.5
    assert limiter.allow("a") == (True, 0.0)
    limiter.allow("b")
    limiter.allow("c")  # "a" is forgotten: a full bucket again
    assert [limiter.allow("a")[0] for _ in range(2)] == [True, True]
    trusted = parse_networks("10.0.0.0/8, 192.0.2.1")
    assert client_address("192.0.2.1", None, trusted) == "192.0.2.1"
    assert client_address("198.51.100.7", "1.1.1.1", trusted) == "198.51.100.7"  # not a proxy: header ignored
    assert client_address("192.0.2.1", "1.1.1.1,  2.2.2.2 ", trusted) == "2.2.2.2"
    assert client_address("192.0.2.1", "1.1.1.1, 2.2.2.2, 10.1.2.3", trusted) == "2.2.2.2"  # skips trusted hops
    assert client_address("192.0.2.1", "2.2.2.2", ()) == "192.0.2.1"  # no trusted proxies: never the header
    assert client_address(None, "2.2.2.2", trusted) == "unknown"


def test_a_spoofed_forwarding_header_does_not_evade_the_limit(serving_address, page_json):
    settings = web_settings(serving_address, feedback={"burst": 2, "rate_per_second": 0.01})  # no trusted proxy
    click = {"feedback_token": page_json["feedback_token"], "item_id": page_json["items"][0]["id"], "event": "click"}
    with WebThread(settings) as limited:
        codes = [post(limited, click, headers={"X-Forwarded-For": f"203.0.113.{i}"}).status_code for i in range(4)]
        assert codes == [200, 200, 429, 429]
        assert "from 127.0.0.1" in post(limited, click, headers={"X-Forwarded-For": "1.2.3.4"}).json()["error"]["message"]
