"""The text an image carries: what OCR reads in it, and its caption and alt text from beside it.

``prepare --source-kind images`` (and ``video``, per frame) adds to each item:

- ``caption``: the text of a sidecar file (``photo.jpg.txt`` or ``photo.txt``;
  ``caption``, ``description`` or ``title`` of ``photo.jpg.json`` or
  ``photo.json``), then the image's own description (EXIF ``ImageDescription``,
  XMP ``dc:description`` and ``dc:title``), repeats dropped, joined by newlines;
- ``alt_text``: ``alt`` or ``alt_text`` of the JSON sidecar;
- ``ocr_text`` (the lines read with at least ``min_confidence``, in the
  engine's reading order, one a line), ``ocr_confidence`` (their mean, 0 when none) and
  ``ocr_lines`` (``[{text, confidence, box}]``, the box as four ``[x, y]``
  corners in the image's pixels), when ``--ocr`` names an engine.

Every field is always there (empty when nothing was found), so a template
(``encode --text-template "{caption} {ocr_text}"``) and ``push-milvus
--bm25-fields caption,alt_text,ocr_text`` work on every record. An image with
no text costs nothing at query time: its BM25 text is empty.

Engines (``--ocr``): ``rapidocr`` (PP-OCRv4 ONNX models inside the
``rapidocr-onnxruntime`` wheel, Chinese and English; the ``jobs`` extra and
the jobs image install it) or ``tesseract`` (Debian's ``tesseract-ocr`` with
its English data, run as a process). docs/benchmarks.md has both measured on
drawn text; rapidocr is the one installed and tested in the jobs image.
Each image is read within ``timeout`` seconds: rapidocr runs in a worker
process that is killed and replaced when it overruns, tesseract is a process
of its own. An overrun or an engine failure is a named, counted skip of the
OCR (the image is still indexed, with its captions), never a stopped job.
"""
from __future__ import annotations

import json
import logging
import os
import re
import select
import shutil
import subprocess
import sys
import time
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.jobs.sources.skips import Skip

log = logging.getLogger(__name__)

OCR_ENGINES = ("none", "rapidocr", "tesseract")
SIDECAR_SUFFIXES = (".txt", ".json")
MAX_SIDECAR_BYTES = 64 * 1024
_CAPTION_KEYS = ("caption", "description", "title")
_ALT_KEYS = ("alt", "alt_text")
_XMP_DC = "{http://purl.org/dc/elements/1.1/}"
_STARTUP_SECONDS = 120.0


class OcrSkip(Skip):
    """OCR of one image did not finish: ``reason`` is ``ocr_timeout`` or ``ocr_failed``."""


@dataclass(frozen=True)
class OcrLine:
    text: str
    confidence: float
    box: list  # four [x, y] corners

    def as_dict(self) -> dict:
        return {"text": self.text, "confidence": round(self.confidence, 4), "box": self.box}


@dataclass
class ImageText:
    caption: str = ""
    alt_text: str = ""
    lines: list[OcrLine] = field(default_factory=list)

    def fields(self) -> dict:
        confidences = [line.confidence for line in self.lines]
        return {"caption": self.caption, "alt_text": self.alt_text,
                "ocr_text": "\n".join(line.text for line in self.lines),
                "ocr_confidence": round(sum(confidences) / len(confidences), 4) if confidences else 0.0,
                "ocr_lines": [line.as_dict() for line in self.lines]}


# --- captions and alt text ---------------------------------------------------------------------

def sidecars(image: Path) -> list[Path]:
    """The sidecar files of ``image`` that exist: ``photo.jpg.txt``, ``photo.txt``, ``photo.jpg.json``,
    ``photo.json`` (in that order)."""
    names = [image.name + s for s in SIDECAR_SUFFIXES] + [image.stem + s for s in SIDECAR_SUFFIXES]
    ordered = [names[0], names[2], names[1], names[3]]
    return [image.with_name(n) for n in ordered if (image.parent / n).is_file() and n != image.name]


def _read_small(path: Path) -> str:
    with path.open("rb") as handle:
        data = handle.read(MAX_SIDECAR_BYTES)
    return data.decode("utf-8", errors="replace").strip()


def sidecar_text(paths: list[Path]) -> tuple[list[str], list[str]]:
    """(captions, alt texts) from sidecar files; a JSON sidecar that is not an object of strings gives
    what it can (a bad one is logged, never fatal)."""
    captions: list[str] = []
    alts: list[str] = []
    for path in paths:
        text = _read_small(path)
        if path.suffix == ".txt":
            captions.append(text)
            continue
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            log.warning("%s: not JSON (%s); sidecar ignored", path, exc.msg)
            continue
        if not isinstance(data, dict):
            log.warning("%s: not a JSON object; sidecar ignored", path)
            continue
        captions += [data[k].strip() for k in _CAPTION_KEYS if isinstance(data.get(k), str)]
        alts += [data[k].strip() for k in _ALT_KEYS if isinstance(data.get(k), str)]
    return captions, alts


def xmp_descriptions(packet: bytes | str | None) -> list[str]:
    """``dc:description`` and ``dc:title`` texts of an XMP packet (an ``rdf:Alt`` / ``rdf:Seq`` of
    ``rdf:li`` or plain text); [] for none or for a packet that is not well-formed XML. Pure."""
    if not packet:
        return []
    text = packet.decode("utf-8", errors="replace") if isinstance(packet, bytes) else packet
    if "<!ENTITY" in text or "<!DOCTYPE" in text:
        return []  # an XMP packet declares neither; refusing them rules out entity expansion
    text = re.sub(r"<\?xpacket[^>]*\?>", "", text).strip().strip("\x00")
    try:
        root = ElementTree.fromstring(text)
    except ElementTree.ParseError:
        return []
    found: list[str] = []
    for tag in ("description", "title"):
        for element in root.iter(_XMP_DC + tag):
            parts = [t.strip() for t in element.itertext() if t.strip()]
            found += parts
    return found


def embedded_descriptions(image) -> list[str]:
    """EXIF ImageDescription and XMP descriptions of an open PIL image."""
    found: list[str] = []
    try:
        description = image.getexif().get(0x010E)
    except Exception:  # a broken EXIF block says nothing
        description = None
    if isinstance(description, bytes):
        description = description.decode("utf-8", errors="replace")
    if isinstance(description, str) and description.strip("\x00 \n"):
        found.append(description.strip("\x00 \n"))
    found += xmp_descriptions(image.info.get("xmp") or image.info.get("XML:com.adobe.xmp"))
    return found


def unique(texts: list[str]) -> list[str]:
    """``texts`` without empties and repeats (case and spacing ignored), first kept. Pure."""
    seen: set[str] = set()
    kept = []
    for text in texts:
        key = " ".join(text.split()).casefold()
        if key and key not in seen:
            seen.add(key)
            kept.append(text.strip())
    return kept


# --- OCR ----------------------------------------------------------------------------------------

def _rapidocr_lines(engine, source) -> list[list]:
    result, _ = engine(source)
    return [[[[round(float(x)), round(float(y))] for x, y in box], str(text), float(score)]
            for box, text, score in (result or [])]


def _rapidocr_worker() -> None:  # ``python -m mmsearch.jobs.sources.image_text``: the worker process
    import os
    import sys

    protocol = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)  # whatever the engine prints goes to stderr, never into the protocol
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    protocol.write('"ready"\n')
    protocol.flush()
    for path in sys.stdin:
        try:
            answer = {"lines": _rapidocr_lines(engine, path.rstrip("\n"))}
        except Exception as exc:  # an image the engine cannot read: reported, the worker lives on
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        protocol.write(json.dumps(answer) + "\n")
        protocol.flush()


class RapidOcr:
    """rapidocr in a worker process (JSON lines over its pipes); one image at a time, each within
    ``timeout`` seconds, the worker killed and replaced when it overruns."""

    def __init__(self, timeout: float):
        try:
            import rapidocr_onnxruntime  # noqa: F401
        except ImportError:
            raise ValueError("--ocr rapidocr needs the rapidocr-onnxruntime package "
                             "(pip install 'mmsearch[jobs]'; the jobs image has it)") from None
        self.timeout = timeout
        self._process: subprocess.Popen | None = None
        self._pending = b""

    def _start(self) -> None:
        self._process = subprocess.Popen([sys.executable, "-m", __name__], stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        self._pending = b""
        if self._answer(_STARTUP_SECONDS) != "ready":
            self.close()
            raise OcrSkip("ocr_failed", f"the OCR worker did not start within {_STARTUP_SECONDS:.0f} s")

    def _answer(self, timeout: float):
        """The worker's next JSON line, or None when none came within ``timeout`` or the worker died."""
        deadline = time.monotonic() + timeout
        stdout = self._process.stdout.fileno()
        while b"\n" not in self._pending:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([stdout], [], [], left)[0]:
                return None
            chunk = os.read(stdout, 1 << 16)
            if not chunk:
                return None
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return json.loads(line)

    def read(self, path: Path) -> list[list]:
        if self._process is None or self._process.poll() is not None:
            self._start()
        try:
            self._process.stdin.write(str(path).encode("utf-8") + b"\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            self.close()
            raise OcrSkip("ocr_failed", "the OCR worker had died") from None
        answer = self._answer(self.timeout)
        if answer is None:
            died = self._process.poll() is not None
            self.close()  # busy with it still, or dead: replaced for the next image
            if died:
                raise OcrSkip("ocr_failed", "the OCR worker died reading it")
            raise OcrSkip("ocr_timeout", f"not read within {self.timeout:g} s")
        if "error" in answer:
            raise OcrSkip("ocr_failed", answer["error"])
        return answer["lines"]

    def close(self) -> None:
        process, self._process = self._process, None
        if process is not None:
            process.kill()
            process.wait(5)
            for pipe in (process.stdin, process.stdout):
                pipe.close()


def tesseract_lines(tsv: str) -> list[list]:
    """[box, text, confidence] per line of tesseract's TSV output (words grouped by block, paragraph
    and line; confidence the words' mean, 0..1). Pure."""
    lines: dict[tuple, list] = {}
    for row in tsv.splitlines()[1:]:
        cells = row.split("\t")
        if len(cells) < 12 or cells[0] != "5" or not cells[11].strip() or float(cells[10]) < 0:
            continue
        left, top, width, height = (int(c) for c in cells[6:10])
        key = tuple(cells[1:5])
        line = lines.setdefault(key, [[left, top, left + width, top + height], [], []])
        box = line[0]
        line[0] = [min(box[0], left), min(box[1], top), max(box[2], left + width), max(box[3], top + height)]
        line[1].append(cells[11].strip())
        line[2].append(float(cells[10]) / 100)
    return [[[[x0, y0], [x1, y0], [x1, y1], [x0, y1]], " ".join(words), sum(conf) / len(conf)]
            for (x0, y0, x1, y1), words, conf in lines.values()]


class Tesseract:
    """Debian's ``tesseract`` run once per image, within ``timeout`` seconds."""

    def __init__(self, timeout: float, language: str = "eng"):
        self.binary = shutil.which("tesseract")
        if self.binary is None:
            raise ValueError("--ocr tesseract needs the tesseract program (apt-get install tesseract-ocr "
                             "tesseract-ocr-eng)")
        self.timeout, self.language = timeout, language

    def read(self, path: Path) -> list[list]:
        try:
            done = subprocess.run([self.binary, str(path), "-", "-l", self.language, "tsv"], capture_output=True,
                                  timeout=self.timeout, env={"OMP_THREAD_LIMIT": "1", "PATH": "/usr/bin:/bin"})
        except subprocess.TimeoutExpired:
            raise OcrSkip("ocr_timeout", f"not read within {self.timeout:g} s") from None
        if done.returncode != 0:
            raise OcrSkip("ocr_failed", done.stderr.decode("utf-8", "replace").strip()[-200:])
        return tesseract_lines(done.stdout.decode("utf-8", "replace"))

    def close(self) -> None:
        pass


class OcrReader:
    """Reads the text in images with one engine; ``read`` gives the kept lines or raises :class:`OcrSkip`."""

    def __init__(self, engine: str, *, timeout: float = 30.0, min_confidence: float = 0.5):
        if engine not in OCR_ENGINES[1:]:
            raise ValueError(f"--ocr {engine!r}: choose one of {', '.join(OCR_ENGINES)}")
        if not timeout > 0:
            raise ValueError(f"--ocr-timeout {timeout}: give a positive number of seconds per image")
        self.engine = RapidOcr(timeout) if engine == "rapidocr" else Tesseract(timeout)
        self.name, self.min_confidence = engine, min_confidence

    def read(self, path: Path) -> list[OcrLine]:
        lines = [OcrLine(" ".join(text.split()), confidence, box) for box, text, confidence in self.engine.read(path)]
        return [line for line in lines if line.text and line.confidence >= self.min_confidence]

    def close(self) -> None:
        self.engine.close()

    def __enter__(self) -> "OcrReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()



if __name__ == "__main__":
    _rapidocr_worker()
