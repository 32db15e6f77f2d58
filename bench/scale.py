"""Milvus Lite at scale: FLAT vs IVF_FLAT on synthetic 512-d unit vectors at 10k, 100k and 1M.

For each size the bench generates clustered unit vectors (a Gaussian mixture, one centre per ~1,000
vectors, noise of the centre's scale: each vector's cosine to its centre is about 0.7, the shape of
real embeddings; ``--noise`` changes it), and held-out queries from the same mixture, and computes
the exact top 10 of every query with numpy (inner product). Then, with the Milvus Lite engine
(milvus-lite 2.5.1) as a process whose memory it reads:
- pushes the vectors with the real stage (``mmsearch.jobs.push_milvus.push_vectors``: 1,000-row upserts,
  count check) into a FLAT collection, then (after dropping it) into an IVF_FLAT one: push rows/s;
- for FLAT and each IVF_FLAT ``nlist``: rebuilds the index on the pushed collection (release,
  drop_index, create_index, load): build seconds; then single-query p50 and recall@10 against the
  exact answer for each ``nprobe`` of the sweep; and the engine's resident memory (VmRSS) and peak
  (VmHWM) after the build.
Prints one table per size and the pick for the embedded default (``mmsearch.core.milvus.schema``
``AUTO_INDEX``). The machine is shared: before each size the bench waits for a quiet window and
prints what it found (tests/support/machine.py); latencies measured on a busy machine are flagged.

Run: ``.venv/bin/python bench/scale.py [--sizes 10000,100000,1000000] [--queries 200]``.
"""
from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DIM = 512
CHUNK = 50_000
PER_CENTRE = 1_000


def mixture(size: int, seed: int, noise: float, per_centre: int = PER_CENTRE):
    """(centres, chunks of (ids, unit vectors)) of a Gaussian mixture with one centre per ``per_centre`` vectors."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(max(10, size // per_centre), DIM)).astype(np.float32)

    def chunks():
        for start in range(0, size, CHUNK):
            n = min(CHUNK, size - start)
            r = np.random.default_rng([seed, start])
            x = centres[r.integers(0, len(centres), n)] + noise * r.normal(size=(n, DIM)).astype(np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            yield np.arange(start, start + n, dtype=np.int64), x

    return centres, chunks


def queries(centres: np.ndarray, n: int, seed: int, noise: float) -> np.ndarray:
    r = np.random.default_rng([seed, 2**32 - 1])  # a stream no data chunk uses
    q = centres[r.integers(0, len(centres), n)] + noise * r.normal(size=(n, DIM)).astype(np.float32)
    return q / np.linalg.norm(q, axis=1, keepdims=True)


def exact_top(chunks, q: np.ndarray, k: int = 10) -> np.ndarray:
    """Ids of the exact top ``k`` by inner product, merged chunk by chunk."""
    best_ids = np.zeros((len(q), 0), dtype=np.int64)
    best = np.zeros((len(q), 0), dtype=np.float32)
    for ids, x in chunks():
        scores = q @ x.T
        top = np.argpartition(-scores, k, axis=1)[:, :k]
        best = np.concatenate([best, np.take_along_axis(scores, top, 1)], axis=1)
        best_ids = np.concatenate([best_ids, ids[top]], axis=1)
        keep = np.argsort(-best, axis=1)[:, :k]
        best, best_ids = np.take_along_axis(best, keep, 1), np.take_along_axis(best_ids, keep, 1)
    return best_ids


def memory(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM of ``pid`` in MiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0]) / 1024
    return out


def search_figures(client, collection: str, q: np.ndarray, truth: np.ndarray, params: dict) -> dict:
    times, hits = [], []
    for i, vector in enumerate(q):
        start = time.perf_counter()
        result = client.search(collection, data=[vector.tolist()], limit=10,
                               search_params={"metric_type": "IP", "params": params})
        times.append(time.perf_counter() - start)
        hits.append(len({h["id"] for h in result[0]} & set(truth[i].tolist())) / 10)
    return {"p50_ms": statistics.median(times) * 1000, "recall": float(np.mean(hits))}


def rebuild(client, collection: str, index_type: str, params: dict) -> float:
    """Seconds to replace the collection's vector index and load it again."""
    start = time.perf_counter()
    client.release_collection(collection)
    client.drop_index(collection, "vector")
    index = client.prepare_index_params()
    index.add_index("vector", index_type=index_type, metric_type="IP", params=params)
    client.create_index(collection, index)
    client.load_collection(collection)
    return time.perf_counter() - start


def measure(label: str, size: int, dim: int, chunks, q: np.ndarray, workdir: Path, nlists: list[int],
            nprobes: list[int], busy_threshold: float) -> list[dict]:
    """Push, build, search one data set: a row per (index, nlist, nprobe) (see module doc)."""
    from mmsearch.jobs.corpus import Corpus
    from mmsearch.jobs.push_milvus import push_vectors
    from mmsearch.core.milvus.connection import connect
    from mmsearch.core.milvus.rows import drop_collection
    from mmsearch.core.model_repository import ModelManifest
    from tests.support.machine import wait_quiet
    from tests.support.stack import MilvusServer

    manifest = ModelManifest(name="synthetic", tower="text", dimension=dim, onnx_sha256="synthetic")
    folder = workdir / f"lite-{size}"
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    milvus = MilvusServer(folder / "milvus.db")
    milvus.start()
    rows: list[dict] = []
    # push-milvus writes each row's corpus record hash: one minimal record per id (ids are 0..size-1)
    corpus = Corpus([{"id": i} for i in range(size)], f"synthetic-{size}")
    try:
        started = time.perf_counter()
        truth = exact_top(chunks, q)
        exact_s = time.perf_counter() - started
        busy = wait_quiet([milvus.process.pid], threshold=busy_threshold, patience=120)
        flag = " BUSY" if busy.others > busy_threshold else ""
        print(f"\n{label}; exact numpy top-10 of {len(q)} queries in {exact_s:.1f} s; {busy.describe()}{flag}",
              flush=True)
        for index_type, builds in (("FLAT", [({}, [None])]), ("IVF_FLAT", [({"nlist": n}, nprobes) for n in nlists])):
            started = time.perf_counter()
            pushed = push_vectors(milvus.uri, "scale", f"{size}_{index_type.lower()}", manifest, chunks(), size,
                                  corpus, index_type=index_type, index_params=builds[0][0] or None)
            push_s = time.perf_counter() - started
            collection = pushed["collection"]
            print(f"  push into {index_type}: {size / push_s:,.0f} rows/s ({push_s:.0f} s)", flush=True)
            client = connect(milvus.uri)  # after the push: closing its client closes every one
            try:
                for build_params, sweep in builds:
                    build_s = rebuild(client, collection, index_type, build_params)
                    mem = memory(milvus.process.pid)
                    for nprobe in sweep:
                        figures = search_figures(client, collection, q, truth, {} if nprobe is None else {"nprobe": nprobe})
                        rows.append({"index": index_type, **build_params, "nprobe": nprobe, "build_s": build_s,
                                     "push_rows_s": size / push_s, **figures, **mem, "busy": bool(flag)})
                        print(f"  {index_type:<9} nlist={build_params.get('nlist', '-'):<5} nprobe={nprobe or '-':<4} "
                              f"build {build_s:6.1f} s  p50 {figures['p50_ms']:7.2f} ms  recall@10 "
                              f"{figures['recall']:.3f}  RSS {mem['VmRSS']:7.0f} MiB (peak {mem['VmHWM']:.0f})",
                              flush=True)
                drop_collection(client, collection)  # one collection in memory at a time
            finally:
                client.close()
    finally:
        milvus.stop()
        shutil.rmtree(folder, ignore_errors=True)
    return rows


def real_embeddings(n: int, n_queries: int, repository: str, workdir: Path):
    """(chunks, queries): all-MiniLM-L6-v2 on ``n`` distinct stdlib source lines; queries: the lines after them."""
    import sysconfig

    from mmsearch.jobs import parity
    from mmsearch.jobs.export import export_model
    from mmsearch.core import onnx
    from mmsearch.core.model_repository import ModelRepository
    from tests.fixtures.models import MINILM_SOURCE

    if not repository:
        repository = str(workdir / "repository")
        if not ModelRepository(repository).has("minilm"):
            export_model(str(MINILM_SOURCE), "minilm", repository)
    lines: list[str] = []
    seen: set[str] = set()
    for path in sorted(Path(sysconfig.get_paths()["stdlib"]).rglob("*.py")):
        if "test" in path.parts or "site-packages" in path.parts:
            continue
        for line in path.read_text(errors="replace").splitlines():
            text = " ".join(line.strip().strip("#\"'").split())
            if 20 <= len(text) <= 200 and len(text.split()) >= 3 and text not in seen:
                seen.add(text)
                lines.append(text)
        if len(lines) >= n + n_queries:
            break
    if len(lines) < n + n_queries:
        raise SystemExit(f"--real {n}: the stdlib has only {len(lines) - n_queries} distinct lines to encode")
    folder = ModelRepository(repository).folder("minilm")
    run = parity.onnx_text_runner(onnx.session(folder.onnx_path), folder.path)
    started = time.perf_counter()
    order = sorted(range(n), key=lambda i: len(lines[i]))
    vectors = np.empty((n, folder.manifest.dimension), np.float32)
    for i in range(0, n, 256):
        vectors[order[i:i + 256]] = run([lines[j] for j in order[i:i + 256]])
    print(f"encoded {n:,} stdlib lines in {time.perf_counter() - started:.0f} s", flush=True)
    q = run(lines[n:n + n_queries])

    def chunks():
        for start in range(0, n, CHUNK):
            yield np.arange(start, min(n, start + CHUNK), dtype=np.int64), vectors[start:start + CHUNK]

    return chunks, q


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000")
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--nlists", default="128,1024", help="IVF_FLAT nlist values")
    parser.add_argument("--nprobes", default="8,16,64", help="IVF_FLAT nprobe sweep")
    parser.add_argument("--noise", type=float, default=1.0, help="mixture noise relative to the centres' scale")
    parser.add_argument("--per-centre", type=int, default=PER_CENTRE, help="vectors per mixture centre")
    parser.add_argument("--real", type=int, default=0,
                        help="also N real vectors: all-MiniLM-L6-v2 on N distinct lines of the stdlib's sources")
    parser.add_argument("--repository", default="", help="a model repository holding 'minilm' (default: export one)")
    parser.add_argument("--busy", type=float, default=0.3, help="cores other processes may use before a data set")
    parser.add_argument("--workdir", default="", help="the Milvus Lite file's folder (default: a temp folder)")
    args = parser.parse_args()

    nlists = [int(s) for s in args.nlists.split(",")]
    nprobes = [int(s) for s in args.nprobes.split(",")]
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="mmsearch-scale-"))
    tables: dict[str, list[dict]] = {}
    for size in (int(s) for s in args.sizes.split(",") if s):
        centres, chunks = mixture(size, seed=size, noise=args.noise, per_centre=args.per_centre)
        q = queries(centres, args.queries, seed=size, noise=args.noise)
        tables[f"{size:,}"] = measure(f"{size:,} synthetic vectors ({len(centres)} centres, noise {args.noise})",
                                      size, DIM, chunks, q, workdir, nlists, nprobes, args.busy)
    if args.real:
        chunks, q = real_embeddings(args.real, args.queries, args.repository, workdir)
        tables[f"{args.real:,} real"] = measure(
            f"{args.real:,} real vectors (all-MiniLM-L6-v2 on stdlib source lines, {q.shape[1]}-d)",
            args.real, q.shape[1], chunks, q, workdir, nlists, nprobes, args.busy)
    report(tables)


def report(tables: dict[str, list[dict]]) -> None:
    from mmsearch.core.milvus.schema import AUTO_INDEX

    print("\n| vectors | index | nlist | nprobe | push rows/s | build s | p50 ms | recall@10 | RSS MiB | peak MiB |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for size, rows in tables.items():
        for r in rows:
            print(f"| {size} | {r['index']} | {r.get('nlist', '-')} | {r['nprobe'] or '-'} | {r['push_rows_s']:,.0f} | "
                  f"{r['build_s']:.1f} | "
                  f"{r['p50_ms']:.2f}{' (busy)' if r['busy'] else ''} | {r['recall']:.3f} | {r['VmRSS']:.0f} | "
                  f"{r['VmHWM']:.0f} |")
    print(f"\nembedded default (mmsearch.core.milvus.schema.AUTO_INDEX): {AUTO_INDEX}")
    for size, rows in tables.items():
        ok = [r for r in rows if r["recall"] >= 0.95]
        best = min(ok, key=lambda r: r["p50_ms"]) if ok else None
        if best:
            print(f"  {size}: fastest with recall@10 >= 0.95: {best['index']} nlist={best.get('nlist', '-')} "
                  f"nprobe={best['nprobe'] or '-'} ({best['p50_ms']:.2f} ms, recall {best['recall']:.3f})")
        else:
            print(f"  {size}: no configuration reached recall@10 >= 0.95")


if __name__ == "__main__":
    main()
