"""Text in images, measured: OCR engines on drawn text, and retrieval on a labelled image set made here.

The image set (nothing of it is committed; it is made or installed at run time):
- ``pages``: screenshots of real pages, the standard library's HTML documentation as ``pydoc -w``
  writes it, rendered by Debian's headless Chromium; a query is the module's one-line synopsis with
  the module's name left out, its answer the page;
- ``photos``: the photographs of Debian's ``tuxpaint-stamps-default`` (``make system-deps``), each
  with its English caption as a sidecar (``photo.png.txt``); a query is three of the caption's content
  words in another order (never the caption verbatim), its answer the photo;
- ``drawn``: images of text this bench draws (tests/support/drawn_text.py: fonts, sizes, rotation,
  noise); a query is two of its words, its answer the image.

Measured:
1. OCR character accuracy (1 - edit distance / length) and seconds per image of ``rapidocr`` and
   ``tesseract`` on the drawn set (upright and rotated apart).
2. The set indexed by the real jobs (``prepare --ocr rapidocr``, ``encode`` with the tiny random CLIP's
   image tower, ``push-milvus --bm25-fields caption,alt_text,ocr_text``; MiniLM over the template
   ``{caption} {alt_text} {ocr_text}`` as a second collection), then every query searched in Milvus
   Lite: recall@10 and MRR@10 per part for CLIP alone (random weights: chance, about 10/N), BM25 over
   the text, the text tower over the text, and CLIP fused with BM25 (weighted minmax, dense 0.3 /
   bm25 0.7, the e2e test's arm). Nothing is tuned on these queries: every query is held out.

Run: ``.venv/bin/python bench/images.py [--drawn 30] [--photos 60] [--pages 12] [--workdir DIR]``.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from tests.support.drawn_text import char_accuracy, drawn_set  # noqa: E402
from tests.support.jobs import run_job as job  # noqa: E402

STAMPS = Path("/usr/share/tuxpaint/stamps")
PAGES = ("csv", "json", "sqlite3", "gzip", "zipfile", "tarfile", "shutil", "tempfile", "calendar", "random",
         "statistics", "fractions", "decimal", "heapq", "bisect", "difflib", "textwrap", "unicodedata",
         "hashlib", "hmac", "secrets", "uuid", "socket", "ssl", "smtplib", "imaplib", "ftplib", "wave")
STOP = set("a an the of and or to in on with for by at from is are its it this that as be into over under "
           "called".split())


def content_words(text: str) -> list[str]:
    return [w for w in re.findall(r"[A-Za-z]{3,}", text) if w.lower() not in STOP]


def photos(folder: Path, n: int, rng: random.Random) -> list[dict]:
    """Copy ``n`` captioned tuxpaint photos into ``folder`` with an English sidecar; their queries."""
    if not STAMPS.is_dir():
        print(f"photos: {STAMPS} missing (apt-get install tuxpaint-stamps-default); part skipped")
        return []
    found = []
    for image in sorted(STAMPS.rglob("*.png")):
        caption = image.with_suffix(".txt")
        if caption.is_file():
            english = caption.read_text(errors="replace").splitlines()[0].strip()
            if len(content_words(english)) >= 3:
                found.append((image, english))
    queries = []
    for image, english in rng.sample(found, min(n, len(found))):
        name = f"photo-{image.parent.name}-{image.name}"
        shutil.copy(image, folder / name)
        (folder / f"{name}.txt").write_text(english)
        words = content_words(english)
        query = " ".join(rng.sample(words, min(3, len(words))))
        if query == english:
            continue
        queries.append({"part": "photos", "query": query, "answer": name})
    return queries


def pages(folder: Path, n: int) -> list[dict]:
    """Screenshots of ``n`` stdlib modules' pydoc pages rendered by headless Chromium (the demo's
    screenshots scene renders them the same way); their queries."""
    import importlib
    import pydoc

    from mmsearch.dev.screenshots import ScreenshotError, page_name, render_pages

    try:
        render_pages(PAGES[:n], folder)
    except ScreenshotError as exc:
        print(f"pages: {exc}; part skipped")
        return []
    queries = []
    for module in PAGES[:n]:
        shot = folder / page_name(module)
        synopsis = (pydoc.splitdoc(importlib.import_module(module).__doc__ or "")[0]).strip()
        words = [w for w in content_words(synopsis) if w.lower() != module.lower()]
        if shot.is_file() and len(words) >= 2:
            queries.append({"part": "pages", "query": " ".join(words[:6]), "answer": shot.name})
    return queries


def measure_ocr(drawn: list, folder: Path) -> None:
    from mmsearch.jobs.sources.image_text import OcrReader

    print(f"\nOCR on {len(drawn)} drawn images (fonts, 14-40 px, up to 8 degrees, noise up to 6%):")
    print(f"{'engine':<10} {'accuracy':>8} {'upright':>8} {'rotated':>8} {'s/image':>8}")
    for engine in ("rapidocr", "tesseract"):
        try:
            reader = OcrReader(engine, timeout=600, min_confidence=0.0)
        except ValueError as exc:
            print(f"{engine:<10} not measured: {exc}")
            continue
        with reader:
            reader.read(folder / drawn[0].name)  # the worker's start is not timed
            start, scores = time.perf_counter(), []
            for item in drawn:
                read = " ".join(line.text for line in reader.read(folder / item.name))
                scores.append((char_accuracy(read, item.text), bool(item.rotation)))
            seconds = (time.perf_counter() - start) / len(drawn)
        mean = lambda xs: sum(xs) / max(1, len(xs))  # noqa: E731
        print(f"{engine:<10} {mean([a for a, _ in scores]):8.3f} {mean([a for a, r in scores if not r]):8.3f} "
              f"{mean([a for a, r in scores if r]):8.3f} {seconds:8.2f}")


def build(folder: Path, work: Path) -> tuple[str, Path, dict]:
    """Index ``folder`` with the real jobs; returns (Milvus Lite file, model repository, name -> id)."""
    from tests.fixtures.models import MINILM_SOURCE, build_tiny_clip, export_to

    repo = work / "repo"
    if not (repo / "tiny-clip-image").is_dir():
        export_to(build_tiny_clip(work / "tiny-clip-source" / "tiny-clip"), "tiny-clip", repo)
        export_to(MINILM_SOURCE, "minilm", repo)
    milvus, images, texts = str(work / "milvus.db"), work / "w-images", work / "w-texts"
    start = time.perf_counter()
    job("prepare", "--workdir", str(images), "--source-kind", "images", "--source", str(folder), "--ocr", "rapidocr",
        "--ocr-timeout", "600")
    print(f"\nprepare --ocr rapidocr: {time.perf_counter() - start:.0f} s for the set")
    job("encode", "--workdir", str(images), "--repository", str(repo), "--model", "tiny-clip-image")
    texts.mkdir(exist_ok=True)
    shutil.copy(images / "corpus.jsonl", texts / "corpus.jsonl")
    job("encode", "--workdir", str(texts), "--repository", str(repo), "--model", "minilm", "--device", "cpu",
        "--text-template", "{caption} {alt_text} {ocr_text}")
    for scene, workdir, model in (("clip", images, "tiny-clip-image"), ("text", texts, "minilm")):
        job("push-milvus", "--workdir", str(workdir), "--milvus-uri", milvus, "--scene", scene, "--version", "1",
            "--repository", str(repo), "--model", model, "--bm25-fields", "caption,alt_text,ocr_text")
    records = [json.loads(line) for line in (images / "corpus.jsonl").read_text().splitlines()]
    return milvus, repo, {r["name"]: r["id"] for r in records}


def minmax(hits: list[tuple[int, float]]) -> dict[int, float]:
    if not hits:
        return {}
    low, high = min(s for _, s in hits), max(s for _, s in hits)
    return {i: 1.0 if high == low else (s - low) / (high - low) for i, s in hits}


def retrieve(milvus: str, repo: Path, queries: list[dict], ids: dict) -> dict[str, list[int | None]]:
    from mmsearch.core.milvus.connection import close, connect
    from mmsearch.core.model_repository import ModelRepository
    from mmsearch.core.query_tower import QueryTower

    client = connect(milvus)
    towers = {n: QueryTower.load(ModelRepository(str(repo)).folder(n)) for n in ("tiny-clip", "minilm")}
    ranks: dict[str, list[int | None]] = {k: [] for k in ("clip", "bm25", "text tower", "clip+bm25")}

    def search(collection: str, data, field: str, metric: str) -> list[tuple[int, float]]:
        found = client.search(collection, data=[data], anns_field=field, limit=50,
                              search_params={"metric_type": metric})[0]
        return [(hit["id"], float(hit["distance"])) for hit in found]

    try:
        for q in queries:
            lists = {"clip": search("clip_1", towers["tiny-clip"].text(q["query"]).tolist(), "vector", "IP"),
                     "bm25": search("clip_1", q["query"], "sparse", "BM25"),
                     "text tower": search("text_1", towers["minilm"].text(q["query"]).tolist(), "vector", "IP")}
            dense, lexical = minmax(lists["clip"]), minmax(lists["bm25"])
            fused = {i: 0.3 * dense.get(i, 0) + 0.7 * lexical.get(i, 0) for i in set(dense) | set(lexical)}
            lists["clip+bm25"] = sorted(fused.items(), key=lambda kv: (-kv[1], kv[0]))
            for name, hits in lists.items():
                order = [i for i, _ in hits[:10]]
                answer = ids.get(q["answer"])
                ranks[name].append(order.index(answer) + 1 if answer in order else None)
    finally:
        close(client, milvus)
    return ranks


def report(queries: list[dict], ranks: dict[str, list[int | None]], size: int) -> None:
    print(f"\nretrieval over {size} images, {len(queries)} queries (all held out), recall@10 / MRR@10:")
    parts = sorted({q["part"] for q in queries})
    counts = {p: sum(q["part"] == p for q in queries) for p in parts} | {"all": len(queries)}
    print(f"{'retriever':<11}" + "".join(f"{p + ' (' + str(counts[p]) + ')':>22}" for p in parts + ["all"]))
    for name, found in ranks.items():
        cells = []
        for part in parts + ["all"]:
            mine = [r for r, q in zip(found, queries) if part in ("all", q["part"])]
            recall = sum(r is not None for r in mine) / max(1, len(mine))
            mrr = sum(1 / r for r in mine if r) / max(1, len(mine))
            cells.append(f"{recall:.3f} / {mrr:.3f}")
        print(f"{name:<11}" + "".join(f"{c:>22}" for c in cells))
    print(f"(chance for recall@10: {min(1.0, 10 / size):.3f})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drawn", type=int, default=30)
    parser.add_argument("--photos", type=int, default=60)
    parser.add_argument("--pages", type=int, default=12)
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-images-"))
    folder = work / "set"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for stale in ("milvus.db", "w-images", "w-texts"):
        shutil.rmtree(work / stale, ignore_errors=True) if (work / stale).is_dir() else (work / stale).unlink(
            missing_ok=True)
    rng = random.Random(26)
    drawn = drawn_set(args.drawn)
    queries = []
    for item in drawn:
        item.image.save(folder / item.name)
        words = item.text.split()
        queries.append({"part": "drawn", "query": " ".join(rng.sample(words, 2)), "answer": item.name})
    queries += photos(folder, args.photos, rng) + pages(folder, args.pages)
    size = sum(1 for p in folder.iterdir() if p.suffix == ".png")
    print(f"set: {size} images in {folder}; queries: {len(queries)}")
    measure_ocr(drawn, folder)
    milvus, repo, ids = build(folder, work)
    report(queries, retrieve(milvus, repo, queries, ids), size)


if __name__ == "__main__":
    main()
