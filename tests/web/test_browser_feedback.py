"""Clicks and dwell from the page in headless Chromium, all the way into the event store: one click on a result
sends exactly one feedback event (a second click on it sends none), stored once; moving on sends its dwell."""
from __future__ import annotations

import json
from urllib.parse import urlencode

import pymongo
import pytest

from mmsearch.core import events as schema
from tests.support.events import stored
from tests.web.pages import WAIT_MS, results, type_query, wait_for_summary

pytestmark = pytest.mark.browser


def is_feedback(request) -> bool:
    return request.url.endswith("/api/feedback")


def test_a_click_sends_one_event_that_reaches_the_store_and_moving_on_sends_its_dwell(page, web, stack_scene,
                                                                                      stdlib_index):
    beacons: list[dict] = []
    page.on("request", lambda r: beacons.append(json.loads(r.post_data)) if is_feedback(r) else None)
    with page.expect_response(lambda r: "/api/search" in r.url, timeout=WAIT_MS) as searched:
        page.goto(f"{web.url}/?" + urlencode({"scene": stack_scene.name, "q": stack_scene.query}))
    impression = searched.value.json()
    results(page)
    second = page.locator(".result").nth(1)
    assert second.get_attribute("data-id") == str(impression["items"][1]["id"])

    with page.expect_request(is_feedback, timeout=WAIT_MS) as clicked:
        second.click()
    second.click()  # the same result again: nothing more is sent
    assert json.loads(clicked.value.post_data)["event"] == "click"
    feedback = pymongo.MongoClient(stdlib_index.mongo_uri)[schema.DEFAULT_DATABASE][schema.FEEDBACK]
    [doc] = stored(feedback, {"impression": impression["impression_id"]}, n=1)
    assert (doc["event"], doc["item"], doc["rank"]) == ("click", impression["items"][1]["id"], 2)
    assert beacons[0]["event"] == "click" and beacons[0]["feedback_token"] == impression["feedback_token"]

    with page.expect_request(is_feedback, timeout=WAIT_MS) as moved:
        type_query(page, "join two path components")  # new results: the dwell on the clicked one ends
    # Beacons leave in order: had the second click sent one, it would be this request.
    assert json.loads(moved.value.post_data)["event"] == "dwell"
    wait_for_summary(page, "join two path components")
    docs = stored(feedback, {"impression": impression["impression_id"]}, n=2)
    dwell = next(d for d in docs if d["event"] == "dwell")
    assert dwell["item"] == impression["items"][1]["id"] and dwell["dwell_seconds"] > 0
    assert sorted(d["event"] for d in docs) == ["click", "dwell"]
    assert [b["event"] for b in beacons] == ["click", "dwell"]
