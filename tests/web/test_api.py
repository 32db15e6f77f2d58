"""The JSON API, /healthz, /readyz, /metrics and the page's files, against the real serving stack."""
from __future__ import annotations

import re

import pytest
import requests

from tests.fixtures.servers import STDLIB_INDEX_TEXT_FIELD
from tests.support.web import TIMEOUT, WebThread, assert_error, get, png, web_settings


def test_search_returns_ranked_items(web, stack_scene):
    response = get(web, "/api/search", scene=stack_scene.name, q=stack_scene.query, k=8)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["scene"] == stack_scene.name
    assert 1 <= len(body["items"]) <= 8
    scores = [item["score"] for item in body["items"]]
    assert scores == sorted(scores, reverse=True)
    questions = [item["summary"].get("question") for item in body["items"]]
    assert stack_scene.expected in questions, questions
    assert body["arm"] and body["assignments"]
    assert {t["stage"] for t in body["timings"]} >= {"embed", "match"}
    assert body["elapsed_ms"] > 0


def test_search_default_k_and_user_bucketing(web, stack_scene):
    a = get(web, "/api/search", scene=stack_scene.name, q=stack_scene.query, user="alice").json()
    b = get(web, "/api/search", scene=stack_scene.name, q=stack_scene.query, user="alice").json()
    assert a["items"] and a["arm"] == b["arm"]


@pytest.mark.parametrize(
    "params, parameter, words",
    [
        ({"q": "json"}, "scene", "required"),
        ({"scene": "t2t<script>", "q": "json"}, "scene", "not a scene name"),
        ({"scene": "SCENE"}, "q", "q is required"),
        ({"scene": "SCENE", "q": "json", "k": "lots"}, "k", "integer"),
        ({"scene": "SCENE", "q": "json", "k": "0"}, "k", "between 1 and 100"),
        ({"scene": "SCENE", "q": "json", "diversify": "perhaps"}, "diversify", "true or false"),
        ({"scene": "SCENE", "q": "x" * 1001}, "q", "at most 1000"),
    ],
)
def test_bad_parameters_are_400_naming_the_parameter(web, stack_scene, params, parameter, words):
    params = {k: (stack_scene.name if v == "SCENE" else v) for k, v in params.items()}
    assert_error(get(web, "/api/search", **params), 400, parameter, words)


def test_unknown_scene_is_400_from_serving(web):
    error = assert_error(get(web, "/api/search", scene="nope", q="json"), 400, "scene", "unknown scene")
    assert error["code"] == "invalid_argument"


def test_image_upload(web, stack_scene):
    files = {"image": ("red.png", png(), "image/png")}
    response = requests.post(web.url + "/api/search", data={"scene": stack_scene.name}, files=files, timeout=TIMEOUT)
    if stack_scene.image_query:
        assert response.status_code == 200, response.text
    else:  # serving refuses image queries on a text-only scene; the API blames the image
        assert_error(response, 400, "image", "does not accept image")


def test_image_upload_bad_requests(web, stack_scene):
    url = web.url + "/api/search"
    assert_error(requests.post(url, data={"scene": stack_scene.name}, files={"image": ("e.png", b"", "image/png")},
                               timeout=TIMEOUT), 400, "image", "empty")
    big = {"image": ("big.png", b"x" * (64 * 1024 + 1), "image/png")}
    assert_error(requests.post(url, data={"scene": stack_scene.name}, files=big, timeout=TIMEOUT),
                 413, "image", "limit")
    assert_error(requests.post(url, data={"scene": stack_scene.name, "q": "dog"},
                               files={"image": ("a.png", png(), "image/png")}, timeout=TIMEOUT), 400, "q", "not both")
    assert_error(requests.post(url, json={"scene": stack_scene.name}, timeout=TIMEOUT), 415, "image", "multipart")
    assert_error(requests.post(url, files={"image": ("a.png", png(), "image/png")}, timeout=TIMEOUT),
                 400, "scene", "required")


def test_scenes(web, stack_scene):
    response = get(web, "/api/scenes")
    assert response.status_code == 200
    scenes = {s["name"]: s for s in response.json()["scenes"]}
    assert scenes[stack_scene.name]["modality"] == "text"
    assert set(scenes[stack_scene.name]) == {"name", "modality", "image_query", "layers", "fields", "collapse",
                                             "note", "text_fields"}
    assert scenes[stack_scene.name]["text_fields"] == [STDLIB_INDEX_TEXT_FIELD]  # what its index embeds
    assert scenes[stack_scene.name]["collapse"] == ""  # not a scene of video frames: no collapse unless asked
    assert scenes[stack_scene.name]["note"] == ""  # none written in its config
    assert scenes[stack_scene.name]["fields"] == [{"name": "category", "type": "keyword",
                                                   "operators": ["eq", "in", "not"], "facet": True}]


def test_health_ready_metrics(web, stack_scene):
    assert get(web, "/healthz").json() == {"status": "ok"}
    ready = get(web, "/readyz")
    assert ready.status_code == 200 and ready.json()["status"] == "ready"
    get(web, "/api/search", scene=stack_scene.name, q="json")
    assert get(web, "/metrics").status_code == 404, "/metrics is not on the public port"
    assert web.metrics_url and web.metrics_url != web.url
    metrics = requests.get(web.metrics_url + "/metrics", timeout=TIMEOUT)
    assert metrics.status_code == 200 and metrics.headers["Content-Type"].startswith("text/plain")
    assert 'mmsearch_web_requests_total{method="GET",route="/api/search",status="200"}' in metrics.text
    assert 'mmsearch_web_upstream_duration_seconds_count{grpc_code="OK",method="Search"}' in metrics.text


def test_unknown_api_route_and_method_are_json(web):
    assert_error(get(web, "/api/nothing"), 404, None, "Not Found")
    assert_error(requests.delete(web.url + "/api/search", timeout=TIMEOUT), 405, None, "Method Not Allowed")


def test_page_and_static_files(web):
    page = get(web, "/")
    assert page.status_code == 200 and page.headers["Content-Type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    links = re.findall(r'(?:src|href)="([^"]*)"', page.text)
    assert "/static/app.js" in links and all(link.startswith("/") for link in links), links  # no CDN
    for name, kind in (("app.js", "javascript"), ("app.css", "text/css")):
        response = get(web, f"/static/{name}")
        assert response.status_code == 200 and kind in response.headers["Content-Type"]
    assert "innerHTML" not in get(web, "/static/app.js").text.replace("never with innerHTML", "")


def test_serving_down_is_503_with_a_clear_message(web_down):
    error = assert_error(get(web_down, "/api/search", scene="t2t", q="json"), 503, None, "unavailable")
    assert "try again shortly" in error["message"] and error["request_id"] in error["message"]
    assert_error(get(web_down, "/api/scenes"), 503, None, "unavailable")
    assert_error(get(web_down, "/readyz"), 503, None, "not ready")
    assert get(web_down, "/healthz").status_code == 200


def test_images_dir_is_served_only_when_set(tmp_path, serving_address):
    (tmp_path / "cat.png").write_bytes(png())
    with WebThread(web_settings(serving_address, images_dir=tmp_path)) as server:
        assert get(server, "/images/cat.png").content == png()
        assert get(server, "/images/../conftest.py").status_code in (403, 404)
    with WebThread(web_settings(serving_address)) as server:
        assert get(server, "/images/cat.png").status_code == 404


def test_filter_facets_and_pages(web, stack_scene):
    params = [("scene", stack_scene.name), ("q", "read and write files"), ("k", "5"), ("facet", "category"),
              ("filter", "category:csv"), ("filter", "category:gzip")]
    first = requests.get(web.url + "/api/search", params=params, timeout=TIMEOUT).json()
    assert {i["summary"]["category"] for i in first["items"]} <= {"csv", "gzip"} and len(first["items"]) == 5
    [facet] = first["facets"]
    assert facet["field"] == "category" and {c["value"] for c in facet["counts"]} == {"csv", "gzip"}
    assert first["offset"] == 0 and first["next_page_token"] and first["collection"] == "stdlib_1"
    assert first["items"][0]["found_by"][0]["retriever"] == "dense"
    second = requests.get(web.url + "/api/search", params=params + [("page_token", first["next_page_token"])],
                          timeout=TIMEOUT).json()
    assert second["offset"] == 5 and not {i["id"] for i in first["items"]} & {i["id"] for i in second["items"]}
    other = get(web, "/api/search", scene=stack_scene.name, q="json", page_token=first["next_page_token"])
    assert_error(other, 400, "page_token", "belongs to another search")


def test_similar(web, stack_scene):
    hits = get(web, "/api/search", scene=stack_scene.name, q=stack_scene.query, k=3).json()["items"]
    similar = get(web, "/api/similar", scene=stack_scene.name, id=hits[0]["id"], k=5).json()
    assert len(similar["items"]) == 5 and hits[0]["id"] not in [i["id"] for i in similar["items"]]
    assert [t["stage"] for t in similar["timings"]][0] == "fetch"
    assert_error(get(web, "/api/similar", scene=stack_scene.name, id=12345), 404, "id", "no item with id 12345")
    assert_error(get(web, "/api/similar", scene=stack_scene.name), 400, "id", "id is required")


@pytest.mark.parametrize("params, parameter, words", [
    ({"filter": "colour:red"}, "filter", "no filterable field 'colour'"),
    ({"filter": "category:1..2"}, "filter", "RANGE does not apply to keyword field 'category'"),
    ({"facet": "colour"}, "facet", "'colour' is not a field of the scene"),
    ({"page_token": "abc.def"}, "page_token", "not a token this service issued"),
])
def test_bad_filters_facets_and_tokens_are_400_naming_the_parameter(web, stack_scene, params, parameter, words):
    error = assert_error(get(web, "/api/search", scene=stack_scene.name, q="json", **params), 400, parameter, words)
    assert error["code"] == "invalid_argument"
