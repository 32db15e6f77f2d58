"""The page in front of a web service that needs keys (headless Chromium): it says a key is needed and offers the
key form; with a key it lists the scenes, searches, and sends feedback carrying the key (a beacon cannot carry a
header, so the page posts with a keepalive fetch)."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest

from tests.web.conftest import keyed_web
from tests.web.pages import WAIT_MS, results

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def locked_web(keyed_stack, relay_file):
    with keyed_web(keyed_stack, relay_file) as server:
        yield server


def test_the_page_asks_for_a_key_and_searches_with_it(page, locked_web, keyed_stack, stack_scene):
    page.goto(f"{locked_web.url}/?" + urlencode({"scene": keyed_stack.scene, "q": stack_scene.query}))
    page.wait_for_selector("#key-form:not([hidden])", timeout=WAIT_MS)
    assert "needs an API key" in page.text_content("#banner")
    page.fill("#api-key", keyed_stack.keys["search"])  # a key without the feedback scope
    with page.expect_response(lambda r: "/api/search" in r.url, timeout=WAIT_MS) as searched:
        page.click("#key-form button[type=submit]")
    assert searched.value.status == 200 and searched.value.request.headers["x-api-key"] == keyed_stack.keys["search"]
    results(page)
    assert page.locator("#key-form").is_hidden()
    with page.expect_response(lambda r: r.url.endswith("/api/feedback"), timeout=WAIT_MS) as sent:
        page.locator(".result").first.click()
    assert sent.value.status == 403 and sent.value.request.headers["x-api-key"] == keyed_stack.keys["search"]

    page.click("#key-open")  # another key, from the footer
    page.fill("#api-key", keyed_stack.keys["full"])
    with page.expect_response(lambda r: "/api/search" in r.url, timeout=WAIT_MS):
        page.click("#key-form button[type=submit]")
    with page.expect_response(lambda r: r.url.endswith("/api/feedback"), timeout=WAIT_MS) as sent:
        page.locator(".result").nth(1).click()
    assert sent.value.status == 200


def test_a_key_that_may_not_touch_the_scene_is_told_so(page, locked_web, keyed_stack):
    page.goto(locked_web.url + "/")
    page.wait_for_selector("#key-form:not([hidden])", timeout=WAIT_MS)
    page.fill("#api-key", keyed_stack.keys["elsewhere"])
    page.click("#key-form button[type=submit]")
    page.wait_for_function("() => document.querySelector('#banner').textContent.includes('no scenes')",
                           timeout=WAIT_MS)
