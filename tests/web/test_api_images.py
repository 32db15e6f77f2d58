"""The JSON API on an image scene (``two_scenes``): image uploads, text -> image, the scene list."""
from __future__ import annotations

import pytest
import requests

from tests.support.web import TIMEOUT, assert_error

LIMIT = 64 * 1024  # the two_scenes web service's max_image_bytes


def post_image(two_scenes, data: bytes, name: str = "query.png", **fields) -> requests.Response:
    return requests.post(two_scenes.web.url + "/api/search", data={"scene": two_scenes.t2i, **fields},
                         files={"image": (name, data, "image/png")}, timeout=TIMEOUT)


def test_scenes_list_both_modalities(two_scenes):
    scenes = {s["name"]: s for s in requests.get(two_scenes.web.url + "/api/scenes", timeout=TIMEOUT).json()["scenes"]}
    assert (scenes[two_scenes.t2t]["modality"], scenes[two_scenes.t2t]["image_query"]) == ("text", False)
    assert (scenes[two_scenes.t2i]["modality"], scenes[two_scenes.t2i]["image_query"]) == ("image", True)
    assert (scenes[two_scenes.t2t]["note"], scenes[two_scenes.t2i]["note"]) == ("", two_scenes.note)  # as written


@pytest.mark.parametrize("name", ["teal-gradient.png", "grey-noise.png"])
def test_uploaded_indexed_image_is_first(two_scenes, name):
    data = (two_scenes.images / name).read_bytes()
    response = post_image(two_scenes, data, name, k="3")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scene"] == two_scenes.t2i and len(body["items"]) == 3
    first = body["items"][0]
    assert first["summary"] == {"name": name, "url": f"{two_scenes.web.url}/images/{name}"}
    assert first["retrieval_score"] == pytest.approx(1.0, abs=2e-3)
    assert {t["stage"] for t in body["timings"]} >= {"preprocess", "embed", "match"}
    thumbnail = requests.get(first["summary"]["url"], timeout=TIMEOUT)  # the grid's thumbnail URL answers
    assert thumbnail.status_code == 200 and thumbnail.content == data


def test_text_query_on_the_image_scene(two_scenes):
    response = requests.get(two_scenes.web.url + "/api/search", params={"scene": two_scenes.t2i, "q": "red", "k": 12},
                            timeout=TIMEOUT)
    assert response.status_code == 200, response.text
    names = [item["summary"]["name"] for item in response.json()["items"]]
    assert sorted(names) == sorted(p.name for p in two_scenes.images.glob("*.png"))


def test_oversize_upload_is_413_naming_the_image(two_scenes):
    assert_error(post_image(two_scenes, b"\x89PNG\r\n\x1a\n" + b"\x00" * LIMIT), 413, "image", f"limit of {LIMIT}")


@pytest.mark.parametrize("data", [b"definitely not an image", b"\x89PNG\r\n\x1a\n" + b"\x00" * 40],
                         ids=["text", "png-signature-then-garbage"])
def test_undecodable_upload_is_400_naming_the_image(two_scenes, data):
    error = assert_error(post_image(two_scenes, data), 400, "image", "image")
    assert error["code"] == "invalid_argument" and error["message"].startswith("preprocess:"), error


def test_similar_and_size_filters_on_the_image_scene(two_scenes):
    url = two_scenes.web.url
    grid = requests.get(url + "/api/search", params={"scene": two_scenes.t2i, "q": "red", "k": 12},
                        timeout=TIMEOUT).json()["items"]
    source = grid[0]
    similar = requests.get(url + "/api/similar", params={"scene": two_scenes.t2i, "id": source["id"], "k": 12},
                           timeout=TIMEOUT).json()
    assert len(similar["items"]) == 11 and source["id"] not in [i["id"] for i in similar["items"]]
    sized = requests.get(url + "/api/search", params=[("scene", two_scenes.t2i), ("q", "red"), ("k", "12"),
                                                      ("filter", "width:96..96"), ("filter", "height:..100"),
                                                      ("facet", "folder")], timeout=TIMEOUT).json()
    assert len(sized["items"]) == 12 and sized["facets"][0]["counts"] == [{"value": "", "count": 12}]
    none = requests.get(url + "/api/search", params=[("scene", two_scenes.t2i), ("q", "red"), ("filter", "width:97..")],
                        timeout=TIMEOUT).json()
    assert none["items"] == []
    assert_error(requests.get(url + "/api/search", params={"scene": two_scenes.t2i, "q": "red", "filter": "width:wide"},
                              timeout=TIMEOUT), 400, "filter", "'wide' is not a number")
