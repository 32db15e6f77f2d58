"""API keys at the web service's door, in front of two serving replicas that check the same key file: 401, 403 and
429 with the policy's words, the caller's key applied by serving through web's relay key, anonymous access limited
to its scenes, tokens of one replica accepted by the other, and no key text in any body, log or metric."""
from __future__ import annotations

import json
import logging
import urllib.request

import pytest
import requests

from tests.support.loops import eventually
from tests.support.web import TIMEOUT, assert_error
from tests.web.conftest import keyed_web


@pytest.fixture(scope="module")
def web(keyed_stack, relay_file):
    with keyed_web(keyed_stack, relay_file) as server:
        yield server


def search(web, scene, key=None, header="Authorization", **params):
    headers = {} if key is None else {header: f"Bearer {key}" if header == "Authorization" else key}
    return requests.get(web.url + "/api/search", params={"scene": scene, "q": "read and write CSV files", "k": 3,
                                                          **params}, headers=headers, timeout=TIMEOUT)


def feedback(web, page, key=None):
    body = {"feedback_token": page["feedback_token"], "item_id": page["items"][0]["id"], "event": "click"}
    headers = {"Content-Type": "application/json", **({"X-API-Key": key} if key else {})}
    return requests.post(web.url + "/api/feedback", data=json.dumps(body), headers=headers, timeout=TIMEOUT)


def test_without_a_valid_key_it_is_401(web, keyed_stack):
    s = keyed_stack
    response = search(web, s.scene)
    assert_error(response, 401, None, "an API key is required")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert_error(search(web, s.scene, s.keys["search"][:-2] + "zz"), 401, None, "is unknown or its secret does not match")
    bad = requests.get(web.url + "/api/scenes", headers={"Authorization": "Token x"}, timeout=TIMEOUT)
    assert_error(bad, 401, None, "must be `Bearer <key>`")
    assert requests.get(web.url + "/healthz", timeout=TIMEOUT).status_code == 200  # health and the page are public
    assert requests.get(web.url + "/", timeout=TIMEOUT).status_code == 200


def test_scopes_and_scenes_from_web(web, keyed_stack):
    s = keyed_stack
    page = search(web, s.scene, s.keys["search"])
    assert page.status_code == 200 and page.json()["items"]
    assert search(web, s.scene, s.keys["search"], header="X-API-Key").status_code == 200
    assert_error(search(web, s.scene, s.keys["feedback"]), 403, None, "lacks the scope 'search'")
    assert_error(search(web, s.scene, s.keys["elsewhere"]), 403, None, f"may not touch scene {s.scene!r}")
    assert_error(feedback(web, page.json(), s.keys["search"]), 403, None, "lacks the scope 'feedback'")
    assert_error(feedback(web, page.json(), s.keys["elsewhere"]), 403, None, f"may not touch scene {s.scene!r}")
    assert feedback(web, page.json(), s.keys["full"]).status_code == 200
    scenes = requests.get(web.url + "/api/scenes", headers={"X-API-Key": s.keys["elsewhere"]}, timeout=TIMEOUT)
    assert scenes.status_code == 200 and scenes.json()["scenes"] == []  # serving applied the caller's scenes


def test_over_its_rate_a_key_is_429_with_retry_after(web, keyed_stack):
    s = keyed_stack
    codes = [search(web, s.scene, s.keys["slow"]).status_code for _ in range(3)]
    assert codes == [200, 200, 429]
    refused = search(web, s.scene, s.keys["slow"])
    assert_error(refused, 429, None, "over its rate (0.01/s, burst 2)")
    assert int(refused.headers["Retry-After"]) >= 1


def test_anonymous_callers_get_search_and_feedback_on_the_listed_scenes_only(keyed_stack, relay_file):
    s = keyed_stack
    with keyed_web(s, relay_file, access={"anonymous_scenes": "other"}) as anonymous:
        assert_error(search(anonymous, s.scene), 403, None, f"anonymous callers may not touch scene {s.scene!r}")
        scenes = requests.get(anonymous.url + "/api/scenes", timeout=TIMEOUT)
        assert scenes.status_code == 401  # serving's anonymous access is off: it refuses the relayed anonymous caller
    with keyed_web(s, relay_file, access={"anonymous_scenes": s.scene}) as anonymous:
        assert search(anonymous, s.scene, s.keys["full"]).status_code == 200  # keys still work


def test_pages_and_feedback_cross_replicas_behind_one_web(web, keyed_stack):
    """Web spreads calls over both replicas (round robin); every page token and feedback token is accepted by
    whichever replica gets the next call."""
    s = keyed_stack
    for _ in range(6):
        first = search(web, s.scene, s.keys["full"]).json()
        second = search(web, s.scene, s.keys["full"], page_token=first["next_page_token"])
        assert second.status_code == 200, second.text
        assert not {i["id"] for i in first["items"]} & {i["id"] for i in second.json()["items"]}
        assert feedback(web, first, s.keys["full"]).status_code == 200
    served = [_search_count(r) for r in s.replicas]
    assert all(n > 0 for n in served), served


def _search_count(replica) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{replica.serving.running.metrics_port}/metrics",
                                  timeout=10).read().decode()
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("mmsearch_grpc_requests_total{") and 'grpc_method="Search"' in line
               and 'grpc_code="OK"' in line)


def test_a_removed_key_stops_working_at_web(web, keyed_stack):
    s = keyed_stack
    everyone = list(s.lines)
    s.write_keys([r for r in everyone if r != "full"])
    try:
        eventually(lambda: search(web, s.scene, s.keys["full"]).status_code == 401, "the removed key refused")
    finally:
        s.write_keys(everyone)
    eventually(lambda: search(web, s.scene, s.keys["full"]).status_code == 200, "the key valid again")


def test_refusals_are_audited_at_web_and_no_key_text_leaks(web, keyed_stack, caplog):
    s = keyed_stack
    with caplog.at_level(logging.INFO):
        bodies = [search(web, s.scene, key).text for key in (s.keys["feedback"], s.keys["search"] + "x", None)]
        bodies.append(search(web, s.scene, s.keys["search"]).text)
    audits = [r for r in caplog.records if r.name == "mmsearch.audit"]
    assert {(r.key_id, r.outcome) for r in audits} >= {(s.keys["feedback"].split("_")[1], "forbidden"),
                                                       ("invalid", "unauthenticated"),
                                                       ("anonymous", "unauthenticated")}
    metrics = urllib.request.urlopen(f"{web.metrics_url}/metrics", timeout=10).read().decode()
    assert 'mmsearch_audit_events_total{action="search",key_id="anonymous",outcome="unauthenticated"}' in metrics
    text = "\n".join([*bodies, caplog.text, metrics, *(str(r.__dict__) for r in caplog.records)])
    for key in s.keys.values():
        assert key.split("_", 2)[2] not in text
