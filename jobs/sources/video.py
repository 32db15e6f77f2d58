"""Frames of a video for ``prepare --source-kind video``: sampled at scene changes, and at least every N seconds.

:func:`sample_frames` decodes a video with PyAV (its wheels carry FFmpeg) and
keeps the first frame, then a frame whenever the picture changed (the mean
absolute difference of 32x32 colour thumbnails against the last kept frame is at
least ``scene_threshold``, 0..1) at least ``min_gap`` seconds after the last
kept one, or whenever ``every`` seconds passed without one. Each kept frame is
an item of the corpus (see :mod:`mmsearch.jobs.prepare`) with its video and
its time, so the page can link to the moment (``video_url#t=SECONDS``).

A file PyAV cannot open, or one without a video stream, is a ``not_a_video``
skip; a zero-byte file, a container with no streams or a video with no
decodable frame an ``empty_video`` skip; one whose
decoding breaks part-way keeps the frames before the break. All are counted
by reason in prepare's summary, never a stopped job. Collapsing the frames of
one video into one hit is the search's work, not prepare's.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mmsearch.jobs.sources.skips import Skip

VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".mpg", ".mpeg", ".ogv", ".gif")
THUMB = 32


class VideoSkip(Skip):
    """A video that gives no frames: ``reason`` is ``not_a_video`` or ``empty_video``."""


@dataclass(frozen=True)
class Frame:
    seconds: float
    image: object  # PIL.Image, RGB
    scene_change: bool


def difference(a, b) -> float:
    """Mean absolute difference of two equal-size thumbnails (numpy uint8), 0..1. Pure."""
    import numpy as np

    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean() / 255.0)


def thumbnail(image):
    import numpy as np

    return np.asarray(image.convert("RGB").resize((THUMB, THUMB)))


def keep(seconds: float, last: float | None, changed: float, *, every: float, scene_threshold: float,
         min_gap: float) -> bool:
    """Whether a frame at ``seconds`` is kept, the last kept one being at ``last`` and ``changed`` the
    picture's difference from it. Pure."""
    if last is None:
        return True
    gap = seconds - last
    return gap >= every or (changed >= scene_threshold and gap >= min_gap)


def sample_frames(path: Path, *, every: float = 10.0, scene_threshold: float = 0.25,
                  min_gap: float = 0.5, max_frames: int = 10_000) -> Iterator[Frame]:
    """The kept frames of the video at ``path``, in time order; :class:`VideoSkip` when it has none."""
    import av

    if path.stat().st_size == 0:
        raise VideoSkip("empty_video", "zero bytes")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, OSError, UnicodeDecodeError, ValueError) as exc:
        raise VideoSkip("not_a_video", f"{type(exc).__name__}: {exc}") from None
    with container:
        if not container.streams:  # a container that holds nothing: a video of no length
            raise VideoSkip("empty_video", "a container with no streams")
        if not container.streams.video:
            raise VideoSkip("not_a_video", "no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        last_time: float | None = None
        last_thumb = None
        kept = decoded = 0
        try:
            for frame in container.decode(stream):
                if frame.time is None:
                    continue
                decoded += 1
                image = frame.to_image()
                small = thumbnail(image)
                changed = 1.0 if last_thumb is None else difference(small, last_thumb)
                if keep(frame.time, last_time, changed, every=every, scene_threshold=scene_threshold,
                        min_gap=min_gap):
                    yield Frame(round(float(frame.time), 3), image.convert("RGB"),
                                last_thumb is None or changed >= scene_threshold)
                    last_time, last_thumb, kept = frame.time, small, kept + 1
                    if kept >= max_frames:
                        return
        except av.error.FFmpegError:
            if not decoded:
                raise VideoSkip("empty_video", "no frame could be decoded") from None
            return  # a break part-way: the frames before it are kept
        if not decoded:
            raise VideoSkip("empty_video", "no frames")


def frame_records(folder: Path, *, base_url: str | None, frames_uri: str, skip, text_of, every: float,
                  scene_threshold: float, frames_base_url: str | None = None,
                  progress=None) -> Iterator[tuple[str, dict, str]]:
    """(key, record, where) per kept frame of every video under ``folder``: the frame is written as a JPEG
    under ``frames_uri``, the record holds ``video`` (the path relative to ``folder``), ``video_url``,
    ``seconds``, ``moment_url`` (``video_url#t=SECONDS``), the frame's ``url`` (its path under
    ``frames_base_url``, where ``frames_uri`` is served; without it the file's ``file://`` or ``s3://`` URI),
    its size, and the text fields ``text_of(frame file, video path)`` gives; ``skip(reason, path, detail)``
    counts a skipped video."""
    import hashlib
    import io
    import tempfile
    from urllib.parse import quote

    from mmsearch.core import artifacts

    files = sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in VIDEO_SUFFIXES)
    if progress is not None:
        progress.total = len(files)
    for path in files:
        if progress is not None:
            progress.update(1)
        rel = path.relative_to(folder).as_posix()
        video_url = f"{base_url.rstrip('/')}/{quote(rel)}" if base_url else path.resolve().as_uri()
        parent = path.relative_to(folder).parent.as_posix()
        try:
            for frame in sample_frames(path, every=every, scene_threshold=scene_threshold):
                buffer = io.BytesIO()
                frame.image.save(buffer, "JPEG", quality=90)
                data = buffer.getvalue()
                name = f"{rel}@{frame.seconds:.3f}.jpg"
                target = artifacts.join(frames_uri, name)
                artifacts.write_bytes(target, data)
                with tempfile.NamedTemporaryFile(suffix=".jpg") as local:
                    local.write(data)
                    local.flush()
                    text = text_of(Path(local.name), path)
                key = f"{rel}#t={frame.seconds:.3f}"
                url = (f"{frames_base_url.rstrip('/')}/{quote(name)}" if frames_base_url
                       else target if artifacts.is_s3(target) else artifacts.local_path(target).resolve().as_uri())
                yield key, {"name": key, "video": rel, "video_url": video_url, "seconds": frame.seconds,
                            "moment_url": f"{video_url}#t={frame.seconds:g}", "url": url,
                            "file_sha256": hashlib.sha256(data).hexdigest(), "scene_change": frame.scene_change,
                            "folder": "" if parent == "." else parent, "width": frame.image.width,
                            "height": frame.image.height, **text}, key
        except VideoSkip as skipped:
            skip(skipped.reason, path, str(skipped))
