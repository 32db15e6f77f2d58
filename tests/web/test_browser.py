"""The search page in headless Chromium (Debian's /usr/bin/chromium, driven by Playwright; see conftest).

One T2T scene (``web``); the scene switch, image grid and uploads are in test_browser_images.py.
"""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlparse

import pytest

from tests.support.web import WebThread, web_settings

from tests.web.pages import WAIT_MS, results, type_query, wait_for_summary

pytestmark = pytest.mark.browser

XSS = "<img src=x onerror=alert(1)>"
def test_type_a_query_and_see_ranked_results(page, web, stack_scene, artifacts_dir):
    page.goto(web.url + "/")
    page.wait_for_selector(f".scene[data-scene='{stack_scene.name}'][aria-selected='true']", timeout=WAIT_MS)
    type_query(page, stack_scene.query)
    wait_for_summary(page, stack_scene.query)
    questions = results(page)
    assert stack_scene.expected in questions[:5], questions
    ranks = page.locator(".result .rank").all_text_contents()
    assert ranks[:3] == ["1.", "2.", "3."]
    scores = [float(s.split()[-1]) for s in page.locator(".result .score").all_text_contents()]
    assert scores == sorted(scores, reverse=True)
    assert page.locator(".timing[data-stage='embed']").count() == 1
    assert "arm " in page.text_content("#summary-line")
    query = parse_qs(urlparse(page.url).query)
    assert query["q"] == [stack_scene.query] and query["scene"] == [stack_scene.name]
    page.screenshot(path=str(artifacts_dir / "web-results.png"), full_page=True)


def test_shared_url_and_back_forward(page, web, stack_scene):
    page.goto(f"{web.url}/?scene={stack_scene.name}&q=join+two+path+components&k=5")
    wait_for_summary(page, "join two path components")
    assert page.input_value("#q") == "join two path components" and page.input_value("#k") == "5"
    assert len(results(page)) == 5
    page.locator("#q").fill(stack_scene.query)
    page.locator("#q").press("Enter")
    wait_for_summary(page, stack_scene.query)
    page.go_back()
    wait_for_summary(page, "join two path components")
    assert page.input_value("#q") == "join two path components"
    page.go_forward()
    wait_for_summary(page, stack_scene.query)


def test_switch_scene(page, web, stack_scene, search_stack):
    page.goto(f"{web.url}/?scene=no-such-scene&q=json")
    banner = page.wait_for_selector("#banner[data-kind='error']", timeout=WAIT_MS)
    assert "Unknown scene “no-such-scene”" in banner.text_content()
    tabs = page.locator(".scene")
    names = [tabs.nth(i).get_attribute("data-scene") for i in range(tabs.count())]
    assert stack_scene.name in names
    other = next((n for n in names if n != stack_scene.name), stack_scene.name)
    page.click(f".scene[data-scene='{other}']")
    page.wait_for_selector(f".scene[data-scene='{other}'][aria-selected='true']", timeout=WAIT_MS)
    wait_for_summary(page, f"in {other}")
    assert parse_qs(urlparse(page.url).query)["scene"] == [other]
    page.click(f".scene[data-scene='{stack_scene.name}']")
    wait_for_summary(page, f"in {stack_scene.name}")


def test_xss_query_is_shown_as_text(page, web, stack_scene):
    page.goto(f"{web.url}/?scene={stack_scene.name}")
    page.wait_for_selector(".scene[aria-selected='true']", timeout=WAIT_MS)
    type_query(page, XSS)
    summary = wait_for_summary(page, XSS)
    assert f"“{XSS}”" in summary
    assert page.locator("img[src='x']").count() == 0
    assert page.evaluate("document.querySelectorAll('[onerror]').length") == 0
    page.reload()
    wait_for_summary(page, XSS)
    assert page.input_value("#q") == XSS
    assert page.dialogs == []


def test_phone_sized_layout(browser, web, stack_scene, artifacts_dir):
    phone = browser.new_page()
    phone.set_viewport_size({"width": 375, "height": 740})
    try:
        phone.goto(f"{web.url}/?scene={stack_scene.name}&q={stack_scene.query}")
        results(phone)
        assert phone.evaluate("document.documentElement.scrollWidth") <= 375
        box = phone.locator("#q").bounding_box()
        assert box["width"] > 300  # the query box takes the full width
        phone.screenshot(path=str(artifacts_dir / "web-phone.png"), full_page=True)
    finally:
        phone.close()


@pytest.fixture
def own_serving(stdlib_stack):
    """A second, real serving in front of the stack's preprocess and index, that a test may stop."""
    from tests.support.stack import Stack

    own = Stack(stdlib_stack.loop, stdlib_stack.models, stdlib_stack.serving_settings,
                preprocess_port=stdlib_stack.preprocess_port)
    own.start_serving()
    own.wait_serving()
    yield own
    own.close()


def test_error_banner_when_serving_is_stopped(page, own_serving, stack_scene):
    with WebThread(web_settings(own_serving.address, request_timeout_seconds=2.0)) as server:
        page.goto(f"{server.url}/?scene={stack_scene.name}&q=json")
        results(page)
        own_serving.loop.call(own_serving.serving.stop(0))
        own_serving.serving = None
        type_query(page, "join two path components")
        banner = page.wait_for_selector("#banner[data-kind='error']", timeout=WAIT_MS)
        assert re.search(r"Search failed: search is temporarily unavailable; try again shortly \(request id \w+\)",
                         banner.text_content()), banner.text_content()
        assert page.locator(".result").count() == 0


def test_error_banner_when_serving_is_down_at_load(page, web_down):
    page.goto(f"{web_down.url}/?scene=t2t&q=json")
    banner = page.wait_for_selector("#banner[data-kind='error']", timeout=WAIT_MS)
    assert re.search(r"search is temporarily unavailable; try again shortly", banner.text_content())
    assert page.locator(".result").count() == 0


def result_ids(page) -> list[str]:
    page.wait_for_selector(".result", timeout=WAIT_MS)
    return [page.locator(".result").nth(i).get_attribute("data-id") for i in range(page.locator(".result").count())]


def test_facet_chip_next_page_more_like_this_and_the_shared_url(page, web, stack_scene):
    page.goto(f"{web.url}/?scene={stack_scene.name}&q=read+and+write+files")
    wait_for_summary(page, "read and write files")
    chip = page.locator(".chip.facet[data-field='category'][data-value='csv']")
    chip.focus()
    page.keyboard.press("Enter")  # keyboard-usable: chips are buttons
    page.wait_for_function("() => new URLSearchParams(location.search).getAll('filter').includes('category:csv')",
                           timeout=WAIT_MS)
    page.wait_for_selector(".chip.remove", timeout=WAIT_MS)
    wait_for_summary(page, "10 results")
    assert set(page.locator(".result .card-foot .chip").all_text_contents()) == {"csv"}
    first = result_ids(page)

    page.locator("#more").click()
    wait_for_summary(page, "(11–")
    second = result_ids(page)
    assert second and not set(first) & set(second)
    assert page.locator(".result .rank").first.text_content() == "11."
    assert parse_qs(urlparse(page.url).query)["page_token"]
    page.reload()
    wait_for_summary(page, "(11–")
    assert result_ids(page) == second
    page.go_back()
    wait_for_summary(page, "10 results")
    assert result_ids(page) == first

    source = page.locator(".result").first
    source_id, source_name = source.get_attribute("data-id"), source.locator(".question").text_content()
    source.locator("button.similar").click()
    wait_for_summary(page, f"items like “{source_name}”")
    similar = result_ids(page)
    assert similar and source_id not in similar
    query = parse_qs(urlparse(page.url).query)
    assert query["similar"] == [source_id] and "q" not in query and query["filter"] == ["category:csv"]
    page.reload()
    wait_for_summary(page, f"items like #{source_id}")
    assert result_ids(page) == similar
    assert page.dialogs == []


def test_a_page_link_with_a_bad_token_falls_back_to_the_first_page(page, web, stack_scene):
    page.goto(f"{web.url}/?scene={stack_scene.name}&q=json&page_token=abc.def")
    banner = page.wait_for_selector("#banner[data-kind='error']", timeout=WAIT_MS)
    assert "showing the first page" in banner.text_content()
    wait_for_summary(page, "“json”")
    assert page.locator(".result .rank").first.text_content() == "1."
    assert "page_token" not in parse_qs(urlparse(page.url).query)


def test_highlights_are_marked_with_text_nodes_only(page, web, stack_scene):
    page.goto(web.url + "/")
    page.wait_for_selector(f".scene[data-scene='{stack_scene.name}'][aria-selected='true']", timeout=WAIT_MS)
    type_query(page, stack_scene.query)
    wait_for_summary(page, stack_scene.query)
    page.wait_for_selector(".result mark", timeout=WAIT_MS)
    words = {w.lower() for w in re.findall(r"\w+", stack_scene.query)}
    for card in page.locator(".result").all()[:5]:
        for mark in card.locator("mark").all():
            text = mark.text_content()
            assert mark.evaluate("m => m.children.length") == 0  # text, never markup
            if "terms" in (mark.get_attribute("class") or ""):
                assert any(text.lower().startswith(w[:3]) for w in words), text
    answer = page.locator(".result .answer").first
    assert answer.evaluate("n => n.textContent") == answer.text_content()  # the marks change no text
