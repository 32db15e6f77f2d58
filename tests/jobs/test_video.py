"""prepare --source-kind video: frames at scene changes and at least every N seconds from videos the test
makes with PyAV, each an item with its video and time (and OCR text); not-videos and empty videos are
named, counted skips."""
from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from PIL import Image

from mmsearch.jobs.errors import JobError
from mmsearch.jobs.prepare import prepare
from mmsearch.jobs.sources.video import keep, sample_frames
from tests.support.drawn_text import draw, fonts
from tests.support.indexes import read_records
from tests.support.videos import scenes, write_video

av = pytest.importorskip("av")


def test_frames_are_kept_at_scene_changes_and_at_least_every_n_seconds(tmp_path):
    video = write_video(tmp_path / "clip.mp4", scenes())
    kept = list(sample_frames(video, every=1.5))
    assert [(f.seconds, f.scene_change) for f in kept] == [
        (0.0, True), (1.5, False), (2.0, True), (3.5, False), (4.0, True), (5.5, False)]
    assert [f.seconds for f in sample_frames(video, every=60)] == [0.0, 2.0, 4.0]  # the scene changes alone
    assert keep(3.0, 2.9, 1.0, every=10, scene_threshold=0.25, min_gap=0.5) is False  # a change too soon


def test_each_frame_is_an_item_with_its_video_time_and_text(tmp_path):
    folder = tmp_path / "videos"
    font = fonts()[0][1](30)
    titled = [draw("harbour tour departures", font).resize((320, 96))] * 20 + [
        Image.new("RGB", (320, 96), (30, 160, 40))] * 20
    write_video(folder / "tours" / "boat.mp4", titled)
    (folder / "tours" / "boat.mp4.txt").write_text("A boat tour of the harbour")
    write_video(folder / "plain.mp4", scenes())
    (folder / "notes.mp4").write_text("not a video at all")
    write_video(folder / "empty.mp4", scenes())
    (folder / "empty.mp4").write_bytes((folder / "empty.mp4").read_bytes()[:48])  # a header, no frame
    summary = prepare(str(tmp_path / "w"), "video", str(folder), base_url="http://media/v", ocr="rapidocr",
                      ocr_timeout=600)
    assert summary["skips"] in ({"not_a_video": 1, "empty_video": 1}, {"not_a_video": 2})
    assert summary["skipped"] == 2 and summary["records"] == 2 + 3
    records = {r["name"]: r for r in read_records(tmp_path / "w")}
    first = records["tours/boat.mp4#t=0.000"]
    assert first["video"] == "tours/boat.mp4" and first["seconds"] == 0.0 and first["folder"] == "tours"
    assert first["moment_url"] == "http://media/v/tours/boat.mp4#t=0" and first["caption"] == "A boat tour of the harbour"
    assert "harbour" in first["ocr_text"].lower() and first["ocr_lines"]
    second = records["tours/boat.mp4#t=2.000"]
    assert second["moment_url"].endswith("#t=2") and second["ocr_text"] == "" and second["scene_change"] is True
    frame = Path(unquote(urlparse(first["url"]).path))
    assert frame.is_file() and frame.parent == tmp_path / "w" / "frames" / "tours"
    with Image.open(frame) as image:
        assert image.size == (first["width"], first["height"]) == (320, 96)
    assert {r["video"] for r in records.values()} == {"tours/boat.mp4", "plain.mp4"}


def test_frames_are_addressed_under_the_frames_base_url(tmp_path):
    write_video(tmp_path / "videos" / "a b" / "one.mp4", scenes(seconds=1))
    prepare(str(tmp_path / "w"), "video", str(tmp_path / "videos"), base_url="http://media/v",
            frames_base_url="http://media/frames/")
    records = read_records(tmp_path / "w")
    assert [r["url"] for r in records] == [f"http://media/frames/a%20b/one.mp4%40{s}.000.jpg" for s in range(3)]
    for r in records:  # the url's path under the frames base is the frame's file under <workdir>/frames/
        assert (tmp_path / "w" / "frames" / unquote(r["url"].removeprefix("http://media/frames/"))).is_file()
        assert r["moment_url"] == f"http://media/v/a%20b/one.mp4#t={r['seconds']:g}"


@pytest.mark.parametrize("kind, url, words", [
    ("stdlib", "http://media/frames", "video frames only; --source-kind stdlib has none"),
    ("video", "/srv/frames", "give the http(s) URL <workdir>/frames/ is served from"),
])
def test_a_frames_base_url_is_refused_where_it_cannot_serve_frames(tmp_path, kind, url, words):
    with pytest.raises(JobError, match=re.escape(words)):
        prepare(str(tmp_path / "w"), kind, str(tmp_path), frames_base_url=url)


def test_a_zero_length_video_is_an_empty_video_skip(tmp_path):
    folder = tmp_path / "videos"
    folder.mkdir()
    with av.open(str(folder / "nothing.mp4"), "w") as container:  # a valid container, no frame in it
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height, stream.pix_fmt = 32, 32, "yuv420p"
        container.start_encoding()
    (folder / "zero.webm").write_bytes(b"")
    write_video(folder / "one.mp4", scenes(seconds=1))
    summary = prepare(str(tmp_path / "w"), "video", str(folder))
    assert summary["skips"] == {"empty_video": 2} and summary["skipped"] == 2
    assert [r["name"] for r in read_records(tmp_path / "w")] == [f"one.mp4#t={s}.000" for s in range(3)]
