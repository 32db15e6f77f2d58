"""CLIP at its real size: ViT-B/32 image tower and the multilingual text tower, onnxruntime vs PyTorch, one run.

Builds (random weights, nothing downloaded; cached under ``--workdir``):
- CLIP ViT-B/32 from transformers' ``CLIPConfig`` defaults (tests/fixtures/models.py ``build_clip``);
- the multilingual text tower at its real size: the distilbert-base-multilingual-cased
  config + mean pooling + Dense 768->512 (``build_multilingual``),
and exports both with the real export stage (``mmsearch.jobs.export.export_model``: parity gate included),
every tower also as an int8 copy (``--int8``: the first method that passes its own gate at min cosine
0.99 against fp32, printed). Then measures, in ``--rounds`` interleaved rounds (medians printed):
- image tower: images/s over generated 224x224 images (preprocessed once, not timed), batch 1 and
  batch 32: transformers ``CLIPModel.get_image_features`` (PyTorch fp32) vs onnxruntime fp32 vs
  onnxruntime int8;
- text towers, single-query latency (tokenization included on both sides): CLIP's text tower
  (``get_text_features``) and the multilingual tower (``SentenceTransformer.encode``) vs serving's own
  path for a lone query (the inline tokenizer's ``encode_one`` on the exported tokenizer, then serving's
  ``OnnxEncoder``: outputs bound to a buffer, one intra-op thread per core), with the fp32 tower and
  with its int8 copy (what an arm with ``precision: int8`` queries with).
Targets: int8 image tower >= 3x PyTorch fp32 at batch 32, fp32 >= 1.1x; text towers >= 3x.
A lone query streams every weight of the tower from memory once, so int8 weights (a quarter of the
bytes) cut its time most.
The machine is shared: before each timed part the bench waits (up to ``--patience`` s) for a 2 s
window in which other processes use at most ``--busy`` cores, prints what it found, and refuses a
ratio whose parts started on a busy machine. No GPU here: the CUDA execution provider is not run.

Run: ``.venv/bin/python bench/clip.py [--rounds 3] [--workdir DIR]``.
"""
from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUERIES = ["a photo of a cat on a sofa", "two dogs playing in the snow", "sunset over the mountains",
           "a red car parked near the beach", "people walking in a busy street at night", "一只猫在沙发上",
           "un chien qui court sur la plage", "eine Schüssel mit frischem Obst"]


def pictures(n: int, size: int = 224, seed: int = 0) -> list:
    """``n`` generated RGB pictures (gradients and noise), ``size`` x ``size``."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        base = np.stack([x * rng.random() * 2, y * rng.random() * 2, (x + y) * rng.random()], axis=-1)
        out.append(Image.fromarray(np.clip(base + rng.normal(0, 30, base.shape), 0, 255).astype(np.uint8), "RGB"))
    return out


def rate(run, batches: list, rows: int) -> float:
    """Rows per second of ``run`` over ``batches`` (one warm-up call first)."""
    run(batches[0])
    start = time.perf_counter()
    for batch in batches:
        run(batch)
    return rows / (time.perf_counter() - start)


def p50_ms(run, queries: list[str], n: int) -> float:
    run(queries[0])
    times = []
    for i in range(n):
        start = time.perf_counter()
        run(queries[i % len(queries)])
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def build(workdir: Path) -> tuple[Path, Path, Path]:
    """(CLIP source, multilingual source, repository), built and exported once per workdir."""
    from mmsearch.jobs.export import export_model
    from tests.fixtures.models import build_clip, build_multilingual

    sources, repo = workdir / "sources", workdir / "repository"
    clip_src, ml_src = sources / "clip-vit-b32", sources / "multilingual"
    if not (clip_src / "config.json").exists():
        build_clip(clip_src)
    if not (ml_src / "modules.json").exists():
        build_multilingual(ml_src)
    for source, name in ((clip_src, "clip"), (ml_src, "multilingual")):
        if not (repo / f"{name}-int8" / "manifest.json").exists():
            started = time.perf_counter()
            export_model(str(source), name, str(repo), int8=True)
            print(f"exported {name} in {time.perf_counter() - started:.0f} s", flush=True)
    return clip_src, ml_src, repo


def main() -> None:
    import torch
    from sentence_transformers import SentenceTransformer
    from transformers import AutoTokenizer, CLIPModel

    from mmsearch.core import onnx
    from mmsearch.core.image_preprocessing import ImageProcessor
    from mmsearch.core.model_repository import ModelRepository
    from mmsearch.core.tokenizers import load_tokenizer
    from mmsearch.services.serving.backends.encoders import OnnxEncoder
    from tests.support.machine import Parts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--images", type=int, default=64, help="images per batch-32 measurement (a multiple of 32)")
    parser.add_argument("--single", type=int, default=16, help="images per batch-1 measurement")
    parser.add_argument("--queries", type=int, default=50, help="single queries per text measurement")
    parser.add_argument("--workdir", default="", help="keep the models and exports here (default: a temp folder)")
    parser.add_argument("--busy", type=float, default=0.3, help="cores other processes may use before a part")
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait for a quiet machine per part")
    args = parser.parse_args()

    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mmsearch-clip-"))
    clip_src, ml_src, repo = build(workdir)
    repository = ModelRepository(repo)
    print("\nexport parity (min cosine over the gate's inputs):")
    for name in ("clip", "clip-int8", "clip-image", "clip-image-int8", "multilingual", "multilingual-int8"):
        m = repository.manifest(name)
        print(f"  {name}: {m.parity['min_cosine']:.6f} over {m.parity['n']} inputs"
              + (f", {m.quantization['method']} (against the fp32 reference)" if m.quantization else ""))

    torch.set_num_threads(os.cpu_count() or 1)
    clip = CLIPModel.from_pretrained(str(clip_src)).eval()
    clip_tokenizer = AutoTokenizer.from_pretrained(str(clip_src))
    ml = SentenceTransformer(str(ml_src), device="cpu")
    sessions = {n: onnx.session(repository.folder(n).onnx_path) for n in ("clip-image", "clip-image-int8")}
    tokenizers = {n: load_tokenizer(repository.folder(n).path) for n in ("clip", "multilingual")}
    pixels = ImageProcessor.from_folder(repository.folder("clip-image").path).process(pictures(args.images))
    batch32 = [pixels[i:i + 32] for i in range(0, len(pixels) - 31, 32)]
    batch1 = [pixels[i:i + 1] for i in range(args.single)]

    def torch_images(batch):
        with torch.inference_mode():
            clip.get_image_features(pixel_values=torch.from_numpy(batch))

    def ort_images(name):
        return lambda batch: sessions[name].run(["embedding"], {"pixel_values": batch})

    def torch_clip_text(text):
        enc = clip_tokenizer([text], padding=True, truncation=True, return_tensors="pt")
        with torch.inference_mode():
            clip.get_text_features(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])

    # The text towers as serving runs a lone query: its encoder (outputs bound to a buffer, the session with
    # one intra-op thread per core) after its inline tokenizer's single-text call.
    loop = asyncio.new_event_loop()
    encoders = {n: OnnxEncoder(repository.folder(n), intra_op_threads=0, lone_on_loop=True)
                for n in ("clip", "clip-int8", "multilingual", "multilingual-int8")}

    def ort_text(name):
        def run(text):
            ids, mask = tokenizers[name.removesuffix("-int8")].encode_one(text)
            loop.run_until_complete(encoders[name].infer({"input_ids": ids, "attention_mask": mask}))
        return run

    def torch_ml_text(text):
        ml.encode([text], normalize_embeddings=True, show_progress_bar=False)

    parts = Parts(args.busy, args.patience)
    image_runs = {"PyTorch": torch_images, "onnxruntime fp32": ort_images("clip-image"),
                  "onnxruntime int8": ort_images("clip-image-int8")}
    text_runs = {("CLIP text", "PyTorch"): torch_clip_text, ("CLIP text", "onnxruntime fp32"): ort_text("clip"),
                 ("CLIP text", "onnxruntime int8"): ort_text("clip-int8"),
                 ("multilingual", "PyTorch"): torch_ml_text, ("multilingual", "onnxruntime fp32"): ort_text("multilingual"),
                 ("multilingual", "onnxruntime int8"): ort_text("multilingual-int8")}
    rounds: list[dict[str, float]] = []
    for r in range(args.rounds):
        print(f"\nround {r + 1}/{args.rounds}", flush=True)
        figures: dict[str, float] = {}
        for label, batches, rows in (("batch 1", batch1, len(batch1)), ("batch 32", batch32, 32 * len(batch32))):
            for engine, run in image_runs.items():
                part = f"r{r} images {label} {engine}"
                parts.before(part)
                figures[f"images {label} {engine}"] = rate(run, batches, rows)
        for (tower, engine), run in text_runs.items():
            part = f"r{r} {tower} {engine}"
            parts.before(part)
            figures[f"{tower} {engine}"] = p50_ms(run, QUERIES, args.queries)
        rounds.append(figures)

    med = statistics.median
    print(f"\nmedian of {len(rounds)} rounds (ViT-B/32 and DistilBERT-base sizes, random weights, "
          f"{os.cpu_count()} cores, no GPU)")
    for key in rounds[0]:
        unit = "images/s" if key.startswith("images") else "ms p50 per query"
        print(f"  {key:<36}{med(r[key] for r in rounds):>10.2f} {unit}")
    print()

    def ratio(label: str, values: list[float], part_names: list[str], target: str) -> None:
        parts.ratio(f"{label} (rounds: {', '.join(f'{v:.2f}' for v in values)})", med(values), *part_names,
                    target=target)

    for label in ("batch 1", "batch 32"):
        for engine, target in (("onnxruntime fp32", ">= 1.1x" if label == "batch 32" else ""),
                               ("onnxruntime int8", ">= 3x" if label == "batch 32" else "")):
            ratio(f"images/s {label}: {engine} / PyTorch fp32",
                  [r[f"images {label} {engine}"] / r[f"images {label} PyTorch"] for r in rounds],
                  [f"r{i} images {label} {e}" for i in range(len(rounds)) for e in (engine, "PyTorch")], target)
    ratio("images/s batch 32: onnxruntime int8 / onnxruntime fp32",
          [r["images batch 32 onnxruntime int8"] / r["images batch 32 onnxruntime fp32"] for r in rounds],
          [f"r{i} images batch 32 onnxruntime {e}" for i in range(len(rounds)) for e in ("int8", "fp32")], "")
    for tower in ("CLIP text", "multilingual"):
        for engine in ("onnxruntime fp32", "onnxruntime int8"):
            ratio(f"{tower} single query: PyTorch p50 / {engine} p50",
                  [r[f"{tower} PyTorch"] / r[f"{tower} {engine}"] for r in rounds],
                  [f"r{i} {tower} {e}" for i in range(len(rounds)) for e in ("PyTorch", engine)], ">= 3x")
    print("\nCUDA: no GPU machine was lent to this run; the CUDA execution provider was not measured.")


if __name__ == "__main__":
    main()
