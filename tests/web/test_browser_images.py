"""Two scenes in the browser: switching text -> text / text -> image, the image grid, image upload.

Runs on ``two_scenes`` (conftest): one serving with the stdlib T2T scene and a T2I
scene of 12 generated PNGs indexed with a random tiny CLIP, whose thumbnails the
web service serves at /images/. Random weights: a text query's order means nothing
here, but an uploaded indexed image must find itself first (its own vector).
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from tests.web.pages import WAIT_MS, type_query, wait_for_summary

pytestmark = pytest.mark.browser

T2T_QUERY = "write rows to a csv file"
# Every thumbnail in the grid has finished loading with real pixels (lazy ones are scrolled to first).
THUMBNAILS_LOADED = """() => {
  const imgs = [...document.querySelectorAll('#results .tile img')];
  return imgs.length > 0 && imgs.every((img) => img.complete && img.naturalWidth > 0);
}"""


def url_query(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def layout(page) -> str:
    return page.get_attribute("#results", "class")


def wait_for_grid(page) -> None:
    page.wait_for_selector("#results.grid .tile", timeout=WAIT_MS)
    page.locator("#results .tile").last.scroll_into_view_if_needed()
    page.wait_for_function(THUMBNAILS_LOADED, timeout=WAIT_MS)


def tile_scores(page) -> list[float]:
    return [float(s) for s in page.locator("#results .tile .score").all_text_contents()]


def test_switch_between_text_and_image_scenes(page, two_scenes):
    t2t, t2i = two_scenes.t2t, two_scenes.t2i
    page.goto(f"{two_scenes.web.url}/?scene={t2t}&q={T2T_QUERY}")
    wait_for_summary(page, f"in {t2t}")
    assert layout(page) == "results cards" and page.locator(".tile").count() == 0
    assert "csv.writer" in page.locator(".result .question").all_text_contents()
    assert page.locator("#upload").is_hidden()
    assert page.locator("#scene-note").is_hidden()  # the text scene has no note
    assert "text → image" in page.text_content(f".scene[data-scene='{t2i}']")

    page.click(f".scene[data-scene='{t2i}']")
    page.wait_for_selector(f".scene[data-scene='{t2i}'][aria-selected='true']", timeout=WAIT_MS)
    wait_for_summary(page, f"in {t2i}")
    assert url_query(page) == {"scene": [t2i], "q": [T2T_QUERY]}
    wait_for_grid(page)
    assert layout(page) == "results grid" and page.locator(".card").count() == 0
    assert page.locator("#upload").is_visible()
    assert page.get_attribute("#q", "placeholder") == "Describe an image…"
    assert page.locator("#scene-note").is_visible()  # the image scene's note, its markup shown as text
    assert page.text_content("#scene-note") == two_scenes.note and page.locator("#scene-note *").count() == 0

    page.click(f".scene[data-scene='{t2t}']")
    wait_for_summary(page, f"in {t2t}")
    assert url_query(page) == {"scene": [t2t], "q": [T2T_QUERY]}
    assert layout(page) == "results cards" and page.locator(".tile").count() == 0
    assert page.locator("#upload").is_hidden() and page.locator("#scene-note").is_hidden()

    page.go_back()  # the switch was a history entry: back is the image scene again
    wait_for_summary(page, f"in {t2i}")
    wait_for_grid(page)
    assert url_query(page)["scene"] == [t2i]


def test_text_query_shows_an_image_grid(page, two_scenes, artifacts_dir):
    names = {p.name for p in two_scenes.images.glob("*.png")}
    page.goto(f"{two_scenes.web.url}/?scene={two_scenes.t2i}")
    page.wait_for_selector(f".scene[data-scene='{two_scenes.t2i}'][aria-selected='true']", timeout=WAIT_MS)
    type_query(page, "a blue circle")
    wait_for_summary(page, "10 results for “a blue circle”")
    wait_for_grid(page)
    shown = page.locator("#results .tile .name").all_text_contents()
    assert len(shown) == 10 and len(set(shown)) == 10 and set(shown) <= names, shown
    scores = tile_scores(page)
    assert "arm ranking=control" in page.text_content("#summary-line")  # no user: the default arm, score order
    assert scores == sorted(scores, reverse=True) and all(-1.0 <= s <= 1.0 for s in scores), scores
    sources = page.eval_on_selector_all("#results .tile img", "imgs => imgs.map((i) => [i.alt, i.currentSrc])")
    assert sources == [[name, f"{two_scenes.web.url}/images/{name}"] for name in shown]
    page.evaluate("window.scrollTo(0, 0)")
    page.screenshot(path=str(artifacts_dir / "web-t2i.png"), full_page=True)
    page.set_viewport_size({"width": 375, "height": 740})  # phone: two columns, nothing wider than the screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    boxes = [page.locator("#results .tile").nth(i).bounding_box() for i in range(3)]
    assert boxes[0]["y"] == boxes[1]["y"] < boxes[2]["y"]


def test_upload_an_indexed_image_finds_it_first(page, two_scenes, artifacts_dir):
    page.goto(f"{two_scenes.web.url}/?scene={two_scenes.t2i}&q=anything")
    wait_for_summary(page, "“anything”")
    assert page.locator("#upload").is_visible()
    page.set_input_files("#image", str(two_scenes.images / "purple-checks.png"))
    wait_for_summary(page, "for image purple-checks.png in t2i")
    wait_for_grid(page)
    assert page.locator("#results .tile .name").first.text_content() == "purple-checks.png"
    assert tile_scores(page)[0] == pytest.approx(1.0, abs=2e-3)
    assert page.input_value("#q") == "" and "q" not in url_query(page)
    assert page.eval_on_selector("#preview img", "img => img.complete && img.naturalWidth > 0")
    assert page.get_attribute("#preview img", "alt") == "Query image: purple-checks.png"
    page.screenshot(path=str(artifacts_dir / "web-t2i-upload.png"), full_page=True)


def test_upload_on_a_text_scene_is_hidden_and_refused_clearly(page, two_scenes):
    page.goto(f"{two_scenes.web.url}/?scene={two_scenes.t2t}")
    page.wait_for_selector(f".scene[data-scene='{two_scenes.t2t}'][aria-selected='true']", timeout=WAIT_MS)
    assert page.locator("#upload").is_hidden()  # a person has nothing to click
    page.set_input_files("#image", str(two_scenes.images / "red-square.png"))  # forced, as a script could
    banner = page.wait_for_selector("#banner[data-kind='error']", timeout=WAIT_MS)
    assert f"scene '{two_scenes.t2t}' does not accept image queries" in banner.text_content()
    assert page.locator(".result").count() == 0


def test_more_like_this_on_an_image_tile(page, two_scenes):
    page.goto(f"{two_scenes.web.url}/?scene={two_scenes.t2i}&q=red")
    wait_for_grid(page)
    tile = page.locator("#results .tile").nth(2)
    tile_id, name = tile.get_attribute("data-id"), tile.locator(".name").text_content()
    tile.locator("button.similar").click()
    wait_for_summary(page, f"items like “{name}”")
    wait_for_grid(page)
    ids = [page.locator("#results .tile").nth(i).get_attribute("data-id")
           for i in range(page.locator("#results .tile").count())]
    assert ids and tile_id not in ids
    assert url_query(page) == {"scene": [two_scenes.t2i], "similar": [tile_id]}
