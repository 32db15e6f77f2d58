"""Video frames, sort and collapse on the page and in the JSON API, in headless Chromium.

Two videos made here with PyAV (harbour.mp4: three scenes, city.mp4: two) go
through the real jobs: ``prepare --source-kind video`` (a frame per scene
change: five frame items with their video and time), ``encode`` (tiny CLIP,
random weights), ``push-milvus --fields video:keyword,seconds:number,...``,
``push-mongo``, ``publish``. The web service serves the folder holding the
videos and the frames prepare wrote (``/images/``): prepare's ``--base-url``
is that route's videos, its ``--frames-base-url`` the route's
``work/frames/``, where encode fetches each frame and the page shows it.
Random weights: the order of a text query means nothing,
so the tests check what holds for any order.
"""
from __future__ import annotations

from urllib.parse import parse_qs, urlparse

import pytest

from mmsearch.dev.processes import free_port
from tests.support.images import link_models
from tests.support.jobs import run_job
from tests.support.stack import start_stack, t2i_config, write_config
from tests.support.videos import scenes, write_video
from tests.support.web import WebThread, get, web_settings
from tests.web.pages import WAIT_MS, wait_for_summary

pytest.importorskip("av")

SCENE = "frames"
FRAMES = {"harbour.mp4": [0.0, 2.0, 4.0], "city.mp4": [0.0, 2.0]}  # a frame per scene (every: 60 s)
FIELDS = [{"name": "video", "type": "keyword"}, {"name": "seconds", "type": "number"},
          {"name": "width", "type": "number"}]
QUERY = "a harbour at dusk"


@pytest.fixture(scope="module")
def frames_web(tiny_clip_repo, service_loop, mongo_server, tmp_path_factory):
    root = tmp_path_factory.mktemp("video-frames")
    write_video(root / "videos" / "harbour.mp4", scenes())
    write_video(root / "videos" / "city.mp4", scenes(colours=[(240, 200, 40), (90, 40, 120)]))  # no frame alike
    repo, work, milvus = root / "repo", root / "work", root / "milvus.db"
    models = link_models(repo, tiny_clip_repo / "tiny-clip", tiny_clip_repo / "tiny-clip-image")
    serving_port = free_port()
    with WebThread(web_settings(f"127.0.0.1:{serving_port}", images_dir=root)) as web:
        run_job("prepare", "--workdir", str(work), "--source-kind", "video", "--source", str(root / "videos"),
                "--base-url", f"{web.url}/images/videos/", "--frames-base-url", f"{web.url}/images/work/frames/",
                "--frame-every", "60")
        run_job("encode", "--workdir", str(work), "--repository", str(repo), "--model", "tiny-clip-image")
        run_job("push-milvus", "--workdir", str(work), "--milvus-uri", str(milvus), "--scene", SCENE, "--version", "1",
                "--repository", str(repo), "--model", "tiny-clip-image", "--fields",
                "video:keyword,seconds:number,width:number")
        run_job("push-mongo", "--workdir", str(work), "--mongo-uri", mongo_server, "--collection", SCENE)
        run_job("publish", "--milvus-uri", str(milvus), "--scene", SCENE, "--version", "1")
        config = t2i_config(SCENE, candidates=16)
        config["scenes"][SCENE]["fields"] = FIELDS
        config["scenes"][SCENE]["defaults"]["summary"]["fields"] = ["name", "url", "video", "seconds", "moment_url"]
        experiments = root / "experiments.yaml"
        write_config(experiments, config)
        stack = start_stack(service_loop, models=models, experiments=experiments, milvus_uri=str(milvus),
                            mongo_uri=mongo_server, model_repository=str(repo), port=serving_port)
        try:
            yield web
        finally:
            stack.close()


def search(web, **params) -> dict:
    response = get(web, "/api/search", scene=SCENE, q=QUERY, k=10, **params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_scene_of_video_frames_collapses_by_video_unless_asked_otherwise(frames_web):
    (scene,) = [s for s in get(frames_web, "/api/scenes").json()["scenes"] if s["name"] == SCENE]
    assert scene["collapse"] == "video"
    collapsed = search(frames_web)
    assert sorted(i["summary"]["video"] for i in collapsed["items"]) == sorted(FRAMES)
    assert {i["summary"]["video"]: i["folded"] + 1 for i in collapsed["items"]} == {v: len(s) for v, s in FRAMES.items()}
    every = search(frames_web, collapse="-")
    assert sorted((i["summary"]["video"], i["summary"]["seconds"]) for i in every["items"]) == sorted(
        (v, s) for v, times in FRAMES.items() for s in times)
    assert all(i["folded"] == 0 for i in every["items"])
    # the best frame of each video stands for it: the first of its video in the score order
    best = {}
    for item in every["items"]:
        best.setdefault(item["summary"]["video"], item["id"])
    assert {i["summary"]["video"]: i["id"] for i in collapsed["items"]} == best
    by_time = search(frames_web, collapse="-", sort="-seconds")
    assert [i["summary"]["seconds"] for i in by_time["items"]] == [4.0, 2.0, 2.0, 0.0, 0.0]
    bad = get(frames_web, "/api/search", scene=SCENE, q=QUERY, collapse="seconds")
    assert bad.status_code == 400 and bad.json()["error"]["parameter"] == "collapse"
    assert "or '-' for no collapse" in bad.json()["error"]["message"]


def tiles(page) -> list[dict]:
    page.wait_for_selector("#results.grid .tile", timeout=WAIT_MS)
    return page.eval_on_selector_all("#results .tile", """tiles => tiles.map((t) => ({
      name: t.querySelector('.name').textContent, score: t.querySelector('.score').textContent,
      moment: t.querySelector('a.moment') && t.querySelector('a.moment').getAttribute('href'),
      time: t.querySelector('a.moment') && t.querySelector('a.moment').textContent,
      folded: t.querySelector('button.folded') && t.querySelector('button.folded').textContent,
      img: t.querySelector('.thumb img') && t.querySelector('.thumb img').getAttribute('src')}))""")


def url_query(page) -> dict[str, list[str]]:
    return parse_qs(urlparse(page.url).query)


def wait_for_tiles(page, n: int) -> list[dict]:
    page.wait_for_function("n => document.querySelectorAll('#results .tile').length === n "
                           "&& !document.body.hasAttribute('aria-busy')", arg=n, timeout=WAIT_MS)
    return tiles(page)


@pytest.mark.browser
def test_the_page_shows_the_best_frame_of_each_video_and_links_to_the_moment(page, frames_web):
    page.goto(f"{frames_web.url}/?scene={SCENE}&q={QUERY}")
    wait_for_summary(page, f"in {SCENE}")
    shown = wait_for_tiles(page, 2)
    page.wait_for_function("""() => [...document.querySelectorAll('#results .tile img')].every(
      (img) => img.complete && img.naturalWidth > 0)""", timeout=WAIT_MS)  # the frames themselves, shown
    assert page.input_value("#collapse") == "video" and "collapse" not in url_query(page)
    video_url = f"{frames_web.url}/images/videos/"
    for tile in shown:
        video = tile["name"].split("#")[0]
        seconds = float(tile["name"].split("#t=")[1])
        assert tile["moment"] == f"{video_url}{video}#t={seconds:g}"  # the moment, in the video
        assert tile["time"] == f"▶ 0:0{int(seconds)}" and tile["img"].startswith(f"{frames_web.url}/images/work/frames/")
        more = len(FRAMES[video]) - 1
        assert tile["folded"] == f"{more} more frame" + ("s" if more > 1 else "")
        float(tile["score"])  # every tile shows its score, a number

    # every frame: the URL says so (the scene collapses by default), and a reload keeps it
    page.select_option("#collapse", "-")
    assert len(wait_for_tiles(page, 5)) == 5 and url_query(page)["collapse"] == ["-"]
    page.select_option("#sort", "-seconds")
    ordered = wait_for_tiles(page, 5)
    assert [t["time"] for t in ordered] == ["▶ 0:04", "▶ 0:02", "▶ 0:02", "▶ 0:00", "▶ 0:00"]
    assert url_query(page)["sort"] == ["-seconds"] and not any(t["folded"] for t in ordered)
    page.reload()
    assert [t["time"] for t in wait_for_tiles(page, 5)] == [t["time"] for t in ordered]
    assert (page.input_value("#sort"), page.input_value("#collapse")) == ("-seconds", "-")
    sort_options = page.eval_on_selector_all("#sort option", "os => os.map((o) => o.value)")
    assert sort_options == ["", "seconds", "-seconds", "width", "-width"]  # the number fields, both ways

    # back to one per video; "2 more frames" shows the frames of that video
    page.select_option("#collapse", "video")
    harbour = [t for t in wait_for_tiles(page, 2) if t["name"].startswith("harbour.mp4")]
    assert "collapse" not in url_query(page) and harbour[0]["folded"] == "2 more frames"
    page.click(".tile:has(a.moment[href*='harbour.mp4']) button.folded")
    frames = wait_for_tiles(page, 3)
    assert all(t["name"].startswith("harbour.mp4#") for t in frames)
    assert url_query(page)["filter"] == ["video:harbour.mp4"] and url_query(page)["collapse"] == ["-"]
    assert page.input_value("#collapse") == "-" and page.dialogs == []
