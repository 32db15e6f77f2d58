"""``mmsearch job prepare``: turn a source into ``<workdir>/corpus.jsonl``.

One JSON object per line, each with a stable integer ``id``:
- ``images``: a folder of images (+ the base URL it is served from) ->
  ``{id, name, url, file_sha256, folder, width, height}``; ``name`` is the path
  relative to the folder, ``file_sha256`` the hash of its bytes (so ``sync``
  re-encodes an image whose file changed under the same name), ``folder`` its
  sub-folder (``""`` at the top), ``width`` and ``height`` the image's pixels
  (what T2I searches filter on), and the text the image carries: ``caption``,
  ``alt_text`` (sidecar files, EXIF/XMP) and, with ``--ocr rapidocr|tesseract``,
  ``ocr_text``, ``ocr_confidence``, ``ocr_lines`` (see
  :mod:`mmsearch.jobs.sources.image_text`). Files that Pillow cannot decode
  (not an image, truncated, corrupt) are skipped and counted, never fatal;
  a sidecar (``photo.jpg.txt``, ``photo.json``) is read, not skipped; an OCR
  run over its ``--ocr-timeout`` is a counted skip of that image's OCR. The
  summary's ``skips`` counts them by reason. Without ``--base-url`` the url is
  the file's ``file://`` URI.
- ``video``: a folder of videos -> one item per kept frame (scene changes, and
  at least every ``--frame-every`` seconds; :mod:`mmsearch.jobs.sources.video`),
  its JPEG written under ``<workdir>/frames/`` (its ``url``: under ``--frames-base-url``,
  where that folder is served, else the file's URI), with ``video``, ``seconds`` and
  ``moment_url`` (``video_url#t=S``), the video's caption and the frame's OCR.
- ``qa``: a Q&A JSONL file (baike2018qa style ``qid, category, title, desc,
  answer``; field names configurable) -> ``{id, question, answer, category}``.
  A malformed line (bad JSON, not an object, a required field missing) fails the
  stage with an error naming the line number: a silently shorter corpus is worse
  than a stopped job. A record whose key repeats an earlier one is skipped and
  counted when it is identical to it; one with other content fails the stage
  with an error naming both lines (which one is right is for the owner of the
  data to say, never for prepare to guess). Keys are compared as text, so
  ``"qid": 1`` and ``"qid": "1"`` are the same key (and the same id); a key
  that is neither a string nor an integer (``1.0``, ``true``, a list, an
  object) is refused, naming the line.
- ``stdlib``: the built-in demo corpus (see :mod:`mmsearch.jobs.sources.stdlib`): the
  qualified name as the question, the docstring's first paragraph as the answer,
  the top-level module as the category. ``--source`` optionally restricts it to
  a comma-separated list of modules (e.g. ``csv,json,os.path``).

Ids: ``stable_id(key)`` = the first 53 bits of SHA-256 of the record's key (the
relative path of an image, the ``--id-field`` value of a Q&A record, or its
question when ``--id-field ''``, the qualified name of a stdlib object). A rerun
gives the same ids, and adding or removing records never renumbers the others.
53 bits keep ids exact in JavaScript/JSON clients (Number.MAX_SAFE_INTEGER); two
different keys hashing to the same id fail the stage (odds ~n²/2⁵⁴).

A record whose JSON exceeds :data:`MAX_RECORD_BYTES` (8 MiB) fails the stage,
naming it: push-mongo could not store it, and finding that out after encode
and push-milvus wastes both.

The corpus is written in one piece (atomically for a local workdir) with
``mmsearch.core.artifacts``; it is held in memory while being built, which is
fine up to a few million records.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
from enum import Enum
from pathlib import Path
from typing import Iterable, Iterator
from urllib.parse import quote

import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import Workdir
from mmsearch.jobs.corpus import corpus_uri, ensure_workdir
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.jsonl import json_objects
from mmsearch.jobs.progress import Progress
from mmsearch.core import artifacts
from mmsearch.core.limits import MiB

log = logging.getLogger(__name__)

ID_BITS = 53
# The JSON of one record; push-mongo stores it as one document (MongoDB's limit: 16 MiB of BSON, which
# can be larger than the JSON), so a record that would not fit fails here, before encode and push-milvus.
MAX_RECORD_BYTES = 8 * MiB


class SourceKind(str, Enum):
    images = "images"
    video = "video"
    qa = "qa"
    stdlib = "stdlib"


def stable_id(key: str) -> int:
    """A non-negative 53-bit integer derived from ``key`` (the same on every run and machine)."""
    digest = hashlib.sha256(key.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - ID_BITS)


class Stats:
    """Counts a stage reports in its final progress line."""

    def __init__(self) -> None:
        self.skipped = 0
        self.duplicates = 0
        self.skips: dict[str, int] = {}  # reason -> count: unreadable, ocr_timeout, ocr_failed, ...

    def skip(self, reason: str, path: object, detail: str) -> None:
        """Count a named skip (a whole file for ``unreadable`` and the video reasons; only the OCR of an
        image for ``ocr_*``) and log it with the file's name."""
        self.skips[reason] = self.skips.get(reason, 0) + 1
        if not reason.startswith("ocr_"):
            self.skipped += 1
        log.info("%s: skipped (%s): %s", path, reason, detail)


def _with_ids(keyed: Iterable[tuple[str, dict, str]], stats: Stats) -> Iterator[dict]:
    """Give each (key, record, where) ``id = stable_id(key)``; skip identical repeats; fail on a repeat
    with other content (naming both places) and on a hash collision."""
    seen: dict[int, tuple[str, dict, str]] = {}
    for key, record, where in keyed:
        rid = stable_id(key)
        if rid in seen:
            first_key, first, first_where = seen[rid]
            if first_key != key:
                raise JobError(f"id collision: keys {first_key!r} and {key!r} hash to the same id {rid}; rename one")
            if first == record:
                stats.duplicates += 1
                continue
            raise JobError(f"{first_where} and {where}: two different records with the key {key!r} (one id): "
                           "remove or rename one of them")
        seen[rid] = (key, record, where)
        yield {"id": rid, **record}


# --- images -------------------------------------------------------------------------------------

def described_image(path: Path) -> tuple[tuple[int, int], list[str]] | None:
    """((width, height), EXIF/XMP descriptions) when Pillow can decode ``path`` completely, else None."""
    from PIL import Image

    from mmsearch.jobs.sources.image_text import embedded_descriptions

    try:
        with Image.open(path) as image:
            size = image.size  # before draft(), which shrinks it
            described = embedded_descriptions(image)
            image.draft("RGB", (256, 256))
            image.load()
        return (int(size[0]), int(size[1])), described
    except Exception:  # not an image, truncated, corrupt, decompression bomb
        return None


def _image_text(path: Path, described: list[str], ocr, stats: Stats) -> dict:
    """The text fields of one image (see :mod:`mmsearch.jobs.sources.image_text`); an OCR overrun or
    failure is a counted, named skip of its OCR."""
    from mmsearch.jobs.sources.image_text import ImageText, OcrSkip, sidecar_text, sidecars, unique

    captions, alts = sidecar_text(sidecars(path))
    text = ImageText("\n".join(unique(captions + described)), "\n".join(unique(alts)))
    if ocr is not None:
        try:
            text.lines = ocr.read(path)
        except OcrSkip as skip:
            stats.skip(skip.reason, path, str(skip))
    return text.fields()


def image_records(folder: Path, base_url: str | None, stats: Stats,
                  progress: Progress | None = None, ocr=None) -> Iterator[tuple[str, dict, str]]:
    from mmsearch.jobs.sources.image_text import SIDECAR_SUFFIXES

    if not folder.is_dir():
        raise JobError(f"--source {folder}: no such folder (the image folder to index)")
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    if progress is not None:
        progress.total = len(files)
    described = {path: described_image(path) for path in files}
    images = {path for path, d in described.items() if d is not None}
    stems = {image.with_suffix("") for image in images}
    for path in files:
        if progress is not None:
            progress.update(1)
        rel = path.relative_to(folder).as_posix()
        if described[path] is None:
            if not _is_sidecar(path, images, stems, SIDECAR_SUFFIXES):
                stats.skip("unreadable", path, "not an image Pillow can decode")
            continue
        size, descriptions = described[path]
        url = f"{base_url.rstrip('/')}/{quote(rel)}" if base_url else path.resolve().as_uri()
        parent = path.relative_to(folder).parent.as_posix()
        yield rel, {"name": rel, "url": url, "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                    "folder": "" if parent == "." else parent, "width": size[0], "height": size[1],
                    **_image_text(path, descriptions, ocr, stats)}, rel


def _video_records(workdir: str, folder: Path, base_url: str | None, stats: Stats, progress: Progress | None,
                   ocr, frames: tuple[float, float, str | None]) -> Iterator[tuple[str, dict, str]]:
    """The frame items of the videos under ``folder`` (see :mod:`mmsearch.jobs.sources.video`), frames
    written under ``<workdir>/frames/``; a video's sidecars and description caption each of its frames."""
    from mmsearch.jobs.sources.video import frame_records

    if not folder.is_dir():
        raise JobError(f"--source {folder}: no such folder (the video folder to index)")
    return frame_records(folder, base_url=base_url, frames_uri=artifacts.join(workdir, "frames"), skip=stats.skip,
                         text_of=lambda frame, video: _frame_text(frame, video, ocr, stats),
                         every=frames[0], scene_threshold=frames[1], frames_base_url=frames[2], progress=progress)


def _frame_text(frame: Path, video: Path, ocr, stats: Stats) -> dict:
    """A frame's text fields: what OCR reads in the frame, the caption and alt text of its video."""
    described = _image_text(video, [], None, stats)
    return {**_image_text(frame, [], ocr, stats), "caption": described["caption"], "alt_text": described["alt_text"]}


def _is_sidecar(path: Path, images: set[Path], stems: set[Path], suffixes: tuple[str, ...]) -> bool:
    """Whether ``path`` is the caption file of an image beside it (``photo.jpg.txt``, ``photo.json``);
    ``stems``: the images' paths without their suffix."""
    base = path.with_suffix("")
    return path.suffix in suffixes and (base in images or base in stems)


# --- Q&A JSONL ----------------------------------------------------------------------------------

def record_key(value: object, where: str, id_field: str) -> str:
    """A record's key as text: a string, or an integer (``1`` and ``"1"`` are one key); anything else
    (a float, a boolean, a list, an object) has no one text form and is refused, naming the line. Pure."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    kind = {bool: "a boolean", float: "a number with a fraction or exponent", list: "a list", dict: "an object"}
    raise JobError(f"{where}: id field {id_field!r} is {kind.get(type(value), type(value).__name__)} "
                   f"({json.dumps(value)[:40]}): give each record a string or an integer key")


def qa_records(lines: Iterable[str], *, source: str, question_field: str, answer_field: str,
               category_field: str, id_field: str) -> Iterator[tuple[str, dict, str]]:
    """(key, {question, answer, category}, "SOURCE line N") per non-blank line; JobError naming the line if malformed."""
    for number, row in json_objects(lines, source):
        where = f"{source} line {number}"
        for flag, field in (("--question-field", question_field), ("--answer-field", answer_field)):
            if field not in row or row[field] is None:
                raise JobError(f"{where}: no field {field!r} (set {flag} to the field that holds it)")
        question = str(row[question_field])
        if id_field:
            if id_field not in row or row[id_field] is None:
                raise JobError(f"{where}: no id field {id_field!r} "
                               f"(set --id-field, or --id-field '' to key records by their question)")
            key = record_key(row[id_field], where, id_field)
        else:
            key = question
        category = row.get(category_field) if category_field else None
        yield key, {"question": question, "answer": str(row[answer_field]),
                    "category": "" if category is None else str(category)}, where


# --- stdlib -------------------------------------------------------------------------------------

def stdlib_records(modules: str | None) -> Iterator[tuple[str, dict, str]]:
    from mmsearch.jobs.sources import stdlib

    roots = [m.strip() for m in modules.split(",") if m.strip()] if modules else None
    try:
        docs = stdlib.collect_isolated(roots)
    except ValueError as exc:
        raise JobError(f"--source {modules!r}: {exc}") from None
    for doc in docs:
        yield doc.name, {"question": doc.name, "answer": doc.summary, "category": doc.top}, doc.name


# --- the stage ----------------------------------------------------------------------------------

def _within_limit(line: str, record: dict) -> str:
    """``line`` (a record's JSON) when it fits :data:`MAX_RECORD_BYTES`; JobError naming the record otherwise."""
    size = len(line.encode("utf-8"))
    if size > MAX_RECORD_BYTES:
        largest = max((k for k in record if k != "id"), key=lambda k: len(str(record[k])), default="id")
        raise JobError(f"record id {record['id']} is {size / MiB:.1f} MiB of JSON (its largest field {largest!r}), "
                       f"over the {MAX_RECORD_BYTES // MiB} MiB a record may be (MongoDB stores at most 16 MiB a "
                       "document): shorten or split that record in the source")
    return line


def _text_lines(path: Path, source: str) -> Iterator[str]:
    try:
        with path.open(encoding="utf-8") as handle:
            yield from handle
    except UnicodeDecodeError as exc:
        raise JobError(f"--source {source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None


def _source_path(source: str | None, what: str) -> Path:
    if not source:
        raise JobError(f"--source is required for --source-kind {what}")
    try:
        return artifacts.materialize(source)
    except artifacts.ArtifactError as exc:
        raise JobError(f"--source {source}: {exc}") from None


def prepare(workdir: str, source_kind: SourceKind | str, source: str | None = None, *,
            base_url: str | None = None, question_field: str = "title", answer_field: str = "answer",
            category_field: str = "category", id_field: str = "qid", ocr: str = "none", ocr_timeout: float = 30.0,
            frame_every: float = 10.0, scene_threshold: float = 0.25, frames_base_url: str | None = None,
            progress: Progress | None = None) -> dict:
    """Build and write the corpus; returns the summary ``{records, skipped, duplicates, corpus}`` (and
    ``skips``, the skipped files and OCR runs by reason, for images)."""
    kind = SourceKind(source_kind)
    ensure_workdir(workdir)
    if not frame_every > 0 or not 0 <= scene_threshold <= 1:
        raise JobError(f"--frame-every {frame_every} / --scene-threshold {scene_threshold}: give a positive number "
                       "of seconds and a threshold between 0 and 1")
    if frames_base_url and kind is not SourceKind.video:
        raise JobError(f"--frames-base-url: video frames only; --source-kind {kind.value} has none (drop it)")
    if frames_base_url and not frames_base_url.startswith(("http://", "https://")):
        raise JobError(f"--frames-base-url {frames_base_url}: give the http(s) URL <workdir>/frames/ is served from")
    with _ocr_reader(ocr, ocr_timeout, kind) as reader:
        return _prepare(workdir, kind, source, base_url=base_url, question_field=question_field,
                        answer_field=answer_field, category_field=category_field, id_field=id_field, ocr=reader,
                        frames=(frame_every, scene_threshold, frames_base_url), progress=progress)


@contextlib.contextmanager
def _ocr_reader(ocr: str, timeout: float, kind: SourceKind) -> Iterator:
    """The OCR engine ``--ocr`` names (None for ``none``), closed at the end; JobError for a bad choice."""
    from mmsearch.jobs.sources.image_text import OcrReader

    if ocr == "none":
        yield None
        return
    if kind not in (SourceKind.images, SourceKind.video):
        raise JobError(f"--ocr {ocr}: OCR reads images and video frames; --source-kind {kind.value} has none (drop --ocr)")
    try:
        reader = OcrReader(ocr, timeout=timeout)
    except ValueError as exc:
        raise JobError(str(exc)) from None
    try:
        yield reader
    finally:
        reader.close()


def _prepare(workdir: str, kind: SourceKind, source: str | None, *, base_url: str | None, question_field: str,
             answer_field: str, category_field: str, id_field: str, ocr, frames: tuple[float, float, str | None],
             progress: Progress | None) -> dict:
    stats = Stats()
    if kind is SourceKind.images:
        keyed = image_records(_source_path(source, kind.value), base_url, stats, progress, ocr)
    elif kind is SourceKind.video:
        keyed = _video_records(workdir, _source_path(source, kind.value), base_url, stats, progress, ocr, frames)
    elif kind is SourceKind.qa:
        path = _source_path(source, kind.value)
        if path.is_dir():
            raise JobError(f"--source {source}: is a folder; expected a JSONL file of Q&A records")
        keyed = qa_records(_text_lines(path, str(source)), source=str(source), question_field=question_field,
                           answer_field=answer_field, category_field=category_field, id_field=id_field)
    else:
        keyed = stdlib_records(source)
    lines = []
    for record in _with_ids(keyed, stats):
        lines.append(_within_limit(json.dumps(record, ensure_ascii=False), record))
        if progress is not None and kind not in (SourceKind.images, SourceKind.video):
            progress.update(1)
    if not lines:
        raise JobError(f"empty corpus: --source {source or kind.value} gave no records"
                       + (f" ({stats.skipped} unreadable files skipped)" if stats.skipped else ""))
    target = corpus_uri(workdir)
    artifacts.write_bytes(target, ("\n".join(lines) + "\n").encode("utf-8"))
    summary = {"records": len(lines), "skipped": stats.skipped, "duplicates": stats.duplicates, "corpus": target}
    return {**summary, "skips": stats.skips} if kind in (SourceKind.images, SourceKind.video) else summary


@job_app.command("prepare")
def prepare_command(
    workdir: Workdir,
    source_kind: SourceKind = typer.Option(..., envvar="MMSEARCH_SOURCE_KIND", help="images | video | qa | stdlib."),
    source: str = typer.Option(None, envvar="MMSEARCH_SOURCE",
                               help="images, video: the folder; qa: the JSONL file; stdlib: optional comma-separated modules."),
    base_url: str = typer.Option(None, envvar="MMSEARCH_BASE_URL", help="URL the image folder is served from."),
    question_field: str = typer.Option("title", envvar="MMSEARCH_QUESTION_FIELD"),
    answer_field: str = typer.Option("answer", envvar="MMSEARCH_ANSWER_FIELD"),
    category_field: str = typer.Option("category", envvar="MMSEARCH_CATEGORY_FIELD"),
    id_field: str = typer.Option("qid", envvar="MMSEARCH_ID_FIELD",
                                 help="Field with each record's unique key ('' = key by the question text)."),
    ocr: str = typer.Option("none", envvar="MMSEARCH_OCR",
                            help="images: read the text in each image with rapidocr | tesseract | none."),
    ocr_timeout: float = typer.Option(30.0, envvar="MMSEARCH_OCR_TIMEOUT",
                                      help="Seconds OCR may spend on one image (then its OCR is skipped, counted)."),
    frame_every: float = typer.Option(10.0, envvar="MMSEARCH_FRAME_EVERY",
                                      help="video: keep a frame at least every this many seconds."),
    scene_threshold: float = typer.Option(0.25, envvar="MMSEARCH_SCENE_THRESHOLD",
                                          help="video: a picture change (0..1) that keeps a frame as a new scene."),
    frames_base_url: str = typer.Option(None, envvar="MMSEARCH_FRAMES_BASE_URL",
                                        help="video: URL <workdir>/frames/ is served from (the frames' url)."),
) -> None:
    """Turn images, a Q&A JSONL file or the Python stdlib docs into <workdir>/corpus.jsonl."""
    with exit_on_error(), Progress("prepare") as progress:
        summary = prepare(workdir, source_kind, source, base_url=base_url, question_field=question_field,
                          answer_field=answer_field, category_field=category_field, id_field=id_field,
                          ocr=ocr, ocr_timeout=ocr_timeout, frame_every=frame_every,
                          scene_threshold=scene_threshold, frames_base_url=frames_base_url, progress=progress)
        progress.finish(**summary)
