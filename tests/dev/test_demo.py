"""`mmsearch demo` end to end on a small corpus: build, start, answer from the page's API, stop, reuse.

The model repository is seeded with the session's exported MiniLM (the export
area's ``minilm_repo``), so the demo skips its export step here; every other
stage (prepare, encode, push-milvus, push-mongo, publish), the embedded
document store and the three services run for real.
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.support.loops import eventually
from tests.support.processes import Lines

pytestmark = pytest.mark.slow
STARTUP_S = 240
SCREENSHOTS_STARTUP_S = 1200  # pages rendered, OCR'd and a CLIP built and exported, on a loaded 2-core machine


def start_demo(data_dir: Path, more: dict[str, str] | None = None) -> tuple[subprocess.Popen, Lines]:
    env = {**os.environ, "MMSEARCH_DEMO_DATA_DIR": str(data_dir), "MMSEARCH_DEMO_SOURCE": "json,csv",
           "MMSEARCH_DEMO_WEB_PORT": "0", "MMSEARCH_DEMO_SERVING_PORT": "0", "MMSEARCH_DEMO_PREPROCESS_PORT": "0",
           "MMSEARCH_DEMO_STARTUP_TIMEOUT_SECONDS": "120", "MMSEARCH_DEMO_LOG_LEVEL": "WARNING", **(more or {})}
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch.cli", "demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    return proc, Lines(proc.stdout)


def read_until_ready(log: Lines, timeout: float = STARTUP_S) -> tuple[str, list[str]]:
    """The page URL from the 'ready: open URL' line, and the lines read so far."""
    def ready() -> str | None:
        ended = log.closed
        for line in list(log.lines):
            if match := re.search(r"ready: open (http://\S+)", line):
                return match.group(1)
        assert not ended, "the demo exited before it was ready:\n" + "\n".join(log.lines[-40:])
        return None
    return eventually(ready, "the demo's 'ready: open URL' line", timeout=timeout, interval=0.2), list(log.lines)


def stop_demo(proc: subprocess.Popen, log: Lines) -> str:
    """SIGTERM (when still running), then everything it printed."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        proc.wait(60)
    return log.text(60)


def pids(lines: list[str]) -> list[int]:
    return [int(m.group(1)) for line in lines if (m := re.search(r"started \w+ \(pid (\d+)\)", line))]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


@pytest.fixture
def seeded_data_dir(tmp_path, request) -> Path:
    repo = request.getfixturevalue("minilm_repo")
    shutil.copytree(Path(repo) / "minilm", tmp_path / "demo" / "models" / "minilm")
    return tmp_path


def test_demo_builds_starts_answers_and_stops(seeded_data_dir):
    proc, log = start_demo(seeded_data_dir)
    try:
        url, lines = read_until_ready(log)
        text = "\n".join(lines)
        assert "building the demo index for scene t2t" in text
        for stage in ("prepare", "encode", "push-milvus", "push-mongo", "publish"):
            assert f"running mmsearch job {stage} " in text
        assert "export: the model repository already holds this model; skipped" in text
        response = requests.get(url + "api/search", params={"scene": "t2t", "q": "parse a JSON document"}, timeout=30)
        assert response.status_code == 200, response.text
        questions = [item["summary"]["question"] for item in response.json()["items"]]
        assert any(q.startswith("json.") for q in questions[:3]), questions
        assert requests.get(url, timeout=10).status_code == 200
        started = pids(lines)
        assert len(started) == 3
    finally:
        out = stop_demo(proc, log)
    assert proc.returncode == 0, out
    for name in ("web", "serving", "preprocess"):
        assert re.search(rf"stopped {name} \(exit code 0\)", out), out
    assert not [pid for pid in started if alive(pid)]

    again, log = start_demo(seeded_data_dir)  # second run: the index is reused, not rebuilt
    try:
        url, lines = read_until_ready(log)
        assert "reusing the demo index" in "\n".join(lines)
        assert requests.get(url + "api/search", params={"scene": "t2t", "q": "csv reader"}, timeout=30).ok
    finally:
        out = stop_demo(again, log)
    assert again.returncode == 0, out


def test_image_demo_on_a_folder_builds_and_finds_an_uploaded_image(tmp_path, tiny_clip_source):
    """`MMSEARCH_DEMO_SOURCE_KIND=images`: encode fetches the images from the URLs the corpus
    records (the page's /images/) while the index is built, before the web service runs."""
    from tests.support.images import distinct_images, write_images

    folder = write_images(tmp_path / "photos", distinct_images())
    env = {**os.environ, "MMSEARCH_DEMO_DATA_DIR": str(tmp_path / "data"), "MMSEARCH_DEMO_SOURCE_KIND": "images",
           "MMSEARCH_DEMO_SOURCE": str(folder), "MMSEARCH_DEMO_MODEL": str(tiny_clip_source),
           "MMSEARCH_DEMO_MODEL_NAME": "clip", "MMSEARCH_DEMO_WEB_PORT": "0", "MMSEARCH_DEMO_SERVING_PORT": "0",
           "MMSEARCH_DEMO_PREPROCESS_PORT": "0", "MMSEARCH_DEMO_STARTUP_TIMEOUT_SECONDS": "120",
           "MMSEARCH_DEMO_LOG_LEVEL": "WARNING"}
    proc = subprocess.Popen([sys.executable, "-m", "mmsearch.cli", "demo"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    log = Lines(proc.stdout)
    try:
        url, _ = read_until_ready(log)
        name = sorted(p.name for p in folder.iterdir())[3]
        response = requests.post(url + "api/search", params={"scene": "t2i", "k": "3"},
                                 files={"image": (name, (folder / name).read_bytes(), "image/png")}, timeout=30)
        assert response.status_code == 200, response.text
        top = response.json()["items"][0]["summary"]
        assert top["name"] == name
        assert requests.get(top["url"], timeout=10).content == (folder / name).read_bytes()  # the thumbnail
    finally:
        out = stop_demo(proc, log)
    assert proc.returncode == 0, out


@pytest.mark.timeout(1500)
def test_screenshots_scene_finds_a_page_by_the_words_on_it(seeded_data_dir):
    """`MMSEARCH_DEMO_SCENES=t2t,screenshots` on three pages: rendered by headless Chromium, read by OCR,
    embedded by a CLIP with random weights built here, and found by a search for words shown on a page
    (the fused arm: BM25 over the text read carries it, the untrained CLIP cannot)."""
    if not any(shutil.which(name) for name in ("chromium", "chromium-browser", "google-chrome")):
        pytest.skip("no headless Chromium to render the pages (make system-deps installs it)")
    proc, log = start_demo(seeded_data_dir, {"MMSEARCH_DEMO_SOURCE": "json", "MMSEARCH_DEMO_SCENES": "t2t,screenshots",
                                             "MMSEARCH_DEMO_SCREENSHOT_PAGES": "csv,json,gzip"})
    try:
        url, lines = read_until_ready(log, timeout=SCREENSHOTS_STARTUP_S)
        text = "\n".join(lines)
        assert "building the demo index for scene screenshots" in text and "random weights" in text
        scenes = {s["name"]: s for s in requests.get(url + "api/scenes", timeout=30).json()["scenes"]}
        assert scenes["screenshots"]["modality"] == "image" and "t2t" in scenes
        for query, page in (("JavaScript Object Notation", "page-json.png"), ("gzipped files", "page-gzip.png")):
            response = requests.get(url + "api/search", params={"scene": "screenshots", "q": query, "k": "3"},
                                    timeout=60)
            assert response.status_code == 200, response.text
            top = response.json()["items"][0]["summary"]
            assert top["name"] == page, (query, [i["summary"]["name"] for i in response.json()["items"]])
            assert query.split()[-1].lower() in top["ocr_text"].lower()
            assert requests.get(top["url"], timeout=10).content[:8] == b"\x89PNG\r\n\x1a\n"  # served at /images/
    finally:
        out = stop_demo(proc, log)
    assert proc.returncode == 0, out
