"""A publish that is measured, gated and reversible, with serving under load (real jobs, real serving).

Two versions of a stdlib scene: ``good`` from the corpus, ``bad`` from the same corpus with half its
documents' texts shuffled among them. The demo's labelled queries about these modules measure both.
Checked: the gate refuses ``bad`` (one line naming the metric, its value and the threshold) and
``good`` keeps serving; ``--force`` publishes it and the record says forced (job status and
ListScenes); ``--rollback`` restores ``good``; across the forced publish and the rollback, under a
bounded concurrent load, no request fails. The p99 latency before, during and after each switch is
printed (run with ``-s`` to read it); it is a figure, not a threshold.
"""
from __future__ import annotations

import json
import random
from pathlib import Path

import grpc
import pytest

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.indexes import build_version, lifecycle_servers, prepare_stdlib, serve_versions, write_corpus
from tests.support.jobs import job, run_job
from tests.support.load import SearchLoad, text_requests
from tests.support.loops import eventually

pytestmark = pytest.mark.slow
SCENE = "gated"
MODULES = ("json", "csv", "random", "shutil", "base64", "uuid", "hashlib", "gzip", "tempfile", "subprocess", "time",
           "re", "glob", "os.path", "secrets", "math")
DEMO_QUERIES = Path(__file__).resolve().parents[2] / "jobs" / "sources" / "stdlib_queries.jsonl"


def module_of(name: str) -> str:
    return "os.path" if name.startswith("os.path") else name.split(".")[0]


def query_set(path: Path) -> list[dict]:
    """The demo's labelled queries whose accepted answers all lie in MODULES."""
    rows = [json.loads(line) for line in DEMO_QUERIES.read_text().splitlines() if line.strip()]
    chosen = [r for r in rows if all(module_of(n) in MODULES for n in r["relevant"]["question"])]
    path.write_text("".join(json.dumps(r) + "\n" for r in chosen))
    return chosen


def corrupted(records: list[dict], seed: int = 7) -> list[dict]:
    """Half the documents (every other one) get another one's text (a fixed derangement)."""
    half = list(range(0, len(records), 2))
    texts = [records[i]["answer"] for i in half]
    shift = random.Random(seed).randrange(1, len(half))
    out = [dict(r) for r in records]
    for n, i in enumerate(half):
        out[i]["answer"] = texts[(n + shift) % len(half)]
    return out


@pytest.fixture(scope="module")
def lifecycle(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("lifecycle")
    with lifecycle_servers(tmp) as (milvus, mongo):
        records = prepare_stdlib(tmp / "good", ",".join(MODULES))
        write_corpus(tmp / "bad", corrupted(records))
        for version in ("good", "bad"):
            build_version(tmp / version, milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=minilm_repo,
                          scene=SCENE, version=version)
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "good")
        stack = serve_versions(service_loop, tmp, SCENE, minilm_repo, milvus.uri, mongo.uri)
        queries = query_set(tmp / "queries.jsonl")
        yield {"tmp": tmp, "milvus": milvus, "stack": stack, "repo": minilm_repo, "queries": queries,
               "records": {r["id"]: r for r in records}}
        stack.close()


def evaluate(s, version: str) -> dict:
    result = run_job("evaluate", "--milvus-uri", s["milvus"].uri, "--collection", f"{SCENE}_{version}",
                     "--compare", SCENE, "--queries", str(s["tmp"] / "queries.jsonl"), "--repository", str(s["repo"]),
                     "--workdir", str(s["tmp"] / version))
    return json.loads(result.stdout.strip().splitlines()[-1])


def switch_under_load(s, load: SearchLoad, command: list[str], target: str) -> dict[str, float]:
    """Run ``command`` (a publish) while ``load`` runs; p99 of the phases before, during, after, and
    during a control: a job process that switches nothing (``job status``), for what the process
    alone costs on a small machine."""
    load.wait_for(load.mark() + 100)
    control = load.mark()
    run_job("status", "--milvus-uri", s["milvus"].uri, "--scene", SCENE)
    control_end = load.mark()
    load.wait_for(control_end + 100)
    start = load.mark()
    run_job(*command)
    s["stack"].wait_route(SCENE, target)
    during = load.mark()
    load.wait_for(during + 100)
    end = load.mark()
    return {"before": load.p99_ms(load.phase(control - 100, control)), "control": load.p99_ms(load.phase(control, control_end)),
            "during": load.p99_ms(load.phase(start, during)), "after": load.p99_ms(load.phase(during, end)),
            "during_n": during - start}


def scene(address: str) -> retrieval_pb2.Scene:
    with grpc.insecure_channel(address) as channel:
        scenes = retrieval_pb2_grpc.RetrievalServiceStub(channel).ListScenes(retrieval_pb2.ListScenesRequest(),
                                                                             timeout=10).scenes
    return next(x for x in scenes if x.name == SCENE)


def test_the_gate_refuses_a_corrupted_candidate_force_publishes_it_and_rollback_restores(lifecycle):
    s = lifecycle
    milvus = s["milvus"].uri
    assert len(s["queries"]) >= 12
    good = evaluate(s, "good")
    bad = evaluate(s, "bad")
    print(f"\nlabelled set ({good['queries']} queries): good recall@10 {good['recall']:.3f}, "
          f"corrupted {bad['recall']:.3f} (regression {bad['regression']:.3f})")
    assert good["regression"] == pytest.approx(0.0) and bad["regression"] > 0.1
    gate = ["--milvus-uri", milvus, "--scene", SCENE, "--version", "bad", "--report", bad["report"],
            "--max-regression", "0.05", "--min-recall", f"{good['recall'] - 0.05:.3f}"]

    refused = job("publish", *gate)
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 1 and len(lines) == 1, refused.stderr
    assert lines[0].startswith("error: quality gate: recall@10 ") and "--min-recall" in lines[0]
    assert f"regression {bad['regression']:.4f} against {SCENE}_good" in lines[0] and "--max-regression 0.05" in lines[0]
    s["stack"].route_rounds(2)  # nothing moved
    assert s["stack"].serving.store.current.routes[SCENE] == f"{SCENE}_good"
    assert scene(s["stack"].address).collection == f"{SCENE}_good"

    texts = [q["query"] for q in s["queries"]]
    with SearchLoad(s["stack"].address, text_requests(SCENE, texts), concurrency=4) as load:
        forced = switch_under_load(s, load, ["publish", *gate, "--force"], f"{SCENE}_bad")
        status = json.loads(run_job("status", "--milvus-uri", milvus, "--scene", SCENE).stdout)
        assert status["live"]["collection"] == f"{SCENE}_bad" and status["live"]["published"]["forced"] is True
        assert status["live"]["evaluation"]["recall"] == pytest.approx(bad["recall"])
        assert status["rollback_to"] == [f"{SCENE}_good"]
        live = eventually(lambda: (x := scene(s["stack"].address)).evaluation.forced and x,
                          "ListScenes saying forced", timeout=10, interval=0.1)
        assert (live.collection, live.version, live.evaluation.forced) == (f"{SCENE}_bad", "bad", True)
        assert live.evaluation.recall == pytest.approx(bad["recall"]) and live.documents == len(s["records"])
        rolled = switch_under_load(s, load, ["publish", "--milvus-uri", milvus, "--scene", SCENE, "--rollback"],
                                   f"{SCENE}_good")
    assert load.failures == []
    for name, p99 in (("forced publish", forced), ("rollback", rolled)):
        print(f"p99 ms across the {name}: before {p99['before']:.1f}, during {p99['during']:.1f} "
              f"({p99['during_n']} requests), after {p99['after']:.1f}; during a job process that switches "
              f"nothing: {p99['control']:.1f}")
    assert json.loads(run_job("status", "--milvus-uri", milvus, "--scene", SCENE).stdout)["live"]["collection"] == \
        f"{SCENE}_good"
    again = job("publish", "--milvus-uri", milvus, "--scene", SCENE, "--rollback")
    assert again.returncode == 1 and "cannot roll back scene gated: no previous version is kept" in again.stderr


def test_gate_input_errors_are_one_line(lifecycle, tmp_path):
    s = lifecycle
    milvus = s["milvus"].uri
    report = evaluate(s, "good")["report"]
    cases = [
        (["--version", "bad", "--min-recall", "0.5"], "error: --min-recall, --max-regression and --max-p99-ms need --report"),
        (["--version", "bad", "--report", str(report)], f"error: --report {report} measured collection 'gated_good'"),
        (["--version", "bad", "--rollback"], "error: --rollback goes back to the previous kept version"),
        ([], "error: --version is required"),
    ]
    for extra, expected in cases:
        result = job("publish", "--milvus-uri", milvus, "--scene", SCENE, *extra)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr
