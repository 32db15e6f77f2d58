"""``mmsearch job evaluate``: a labelled query set against a collection, as serving would answer it.

The query set is JSONL, one query per line::

    {"query": "split a string on a separator", "relevant": {"question": ["str.split"]}}
    {"query": "read a whole file as text", "relevant": {"question": "pathlib.Path.read_text"}}
    {"image": "queries/cat.jpg", "relevant_ids": [123456789]}

``query`` is a text, ``image`` an image file (a path relative to the query
file, ``file://``, ``http(s)://``), never both. The relevant documents are
named by id (``relevant_ids``) and/or by a field value of the corpus
(``relevant``: field -> value or values), looked up in ``--workdir``'s
``corpus.jsonl``; a value may match several documents (any of them finds it).

Decisions:
- Each label (an id, or one field value) is one relevant answer. With ``k``
  (``--k``, default 10) and a query's top ``max(k, 10)`` results: recall@k =
  labels found in the top k / labels; reciprocal rank = 1 / the rank of the
  first hit in the top k (0 without one); nDCG@10 with binary gains (a rank
  earns 1 / log2(rank + 1) when it finds a label not found higher up, and the
  ideal list finds min(labels, 10)); a query with no hit in the top k is a
  *no-hit* query. The figures are means over the queries (:func:`judge`,
  :func:`summarise`: pure). ``k`` is at most serving's ``MMSEARCH_MAX_TOP_K``
  (a query, at most its ``MMSEARCH_MAX_QUERY_CHARS``: the same limits). A label
  that names nothing in the corpus can never be found: it counts as a miss, is
  listed in the report and counted in the summary as ``unresolved``, with a
  warning; the gate refuses to judge such a run, and a query set none of
  whose labels names a document, or that names a field no record has, is
  refused (:mod:`mmsearch.jobs.query_set`).
- The query goes through the code serving runs: the tower's exported
  tokenizer or image processor and ``model.onnx`` (:class:`mmsearch.core.query_tower.QueryTower`,
  one query at a time), then the Milvus search serving sends
  (:func:`mmsearch.core.milvus.search.search`: same request, same metric).
  The tower is the one the collection records (its export's text tower for
  text queries, its image tower for images) unless ``--model`` names one.
  Latency is measured per query (encode + search, after one warm-up query);
  p50/p99 are over the queries.
- ``--compare C`` runs the same queries against C too (the published version:
  ``--compare <scene>``, the alias) with C's own tower, and lists the queries
  whose nDCG@10 dropped, worst first; ``regression`` = C's recall@k minus the
  candidate's. A C that names nothing (a first version: nothing published yet)
  gives a warning and a report without comparison; a gate that needs one
  refuses it then (``publish`` checks the report compared against what is live).
- The report goes to ``<workdir>/evaluation/<collection>.json`` and ``.md``
  (a folder or S3, atomically); the summary (:mod:`mmsearch.core.quality`) is
  the stage's final JSON line, a readable line on stderr, and, with
  ``--summary-file``, that file (the operator points it at the pod's
  termination log to read the figures).
- ``--calibrate-precision P`` also calibrates a score cutoff on the
  candidate's answers (:mod:`mmsearch.jobs.calibrate`) and records it with
  the version (its state's ``cutoff``), where serving's ``min_score: auto``
  reads it; the summary and the report carry it too.
"""
from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import (
    MilvusToken, MilvusUri, Model, ModelRepositoryUri, OnnxThreads, TIMEOUT, Timeout, Workdir,
)
from mmsearch.jobs.calibrate import SIMILARITIES, calibrate, judged
from mmsearch.jobs.corpus import corpus_uri, read_corpus
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.progress import check_summary_file, emit, write_summary_file
from mmsearch.jobs.query_set import (
    Label, LabelledQuery, parse_query_set, request_limits, resolve_labels, unresolved,
)
from mmsearch.core import artifacts
from mmsearch.core.milvus.connection import MilvusStoreError, ensure_loaded, session
from mmsearch.core.milvus.record import read_manifest
from mmsearch.core.milvus.registry import resolve_collection
from mmsearch.core.milvus.registry_writes import update_state
from mmsearch.core.milvus.search import search
from mmsearch.core.model_repository import ModelRepository
from mmsearch.core.query_tower import QueryTower

REPORTS = "evaluation"
NDCG_DEPTH = 10


# --------------------------------------------------------------------------- the figures (pure)


@dataclass(frozen=True)
class QueryScore:
    recall: float             # recall@k
    rr: float                 # reciprocal rank of the first hit in the top k
    ndcg10: float
    found: tuple[str, ...]    # names of the labels found in the top k

    @property
    def hit(self) -> bool:
        return bool(self.found)


def judge(retrieved: Sequence[int], labels: Sequence[Label], k: int) -> QueryScore:
    """The scores of one ranked result list (see the module doc). Pure."""
    matched: set[int] = set()
    found: list[str] = []
    rr = dcg = 0.0
    for rank, doc in enumerate(retrieved[:max(k, NDCG_DEPTH)], start=1):
        new = [j for j, label in enumerate(labels) if j not in matched and doc in label.ids]
        if not new:
            continue
        matched.update(new)
        if rank <= k:
            found += [labels[j].name for j in new]
            rr = rr or 1.0 / rank
        if rank <= NDCG_DEPTH:
            dcg += 1.0 / math.log2(rank + 1)
    ideal = sum(1.0 / math.log2(rank + 1) for rank in range(1, min(len(labels), NDCG_DEPTH) + 1))
    return QueryScore(len(found) / len(labels) if labels else 0.0, rr, dcg / ideal if ideal else 0.0, tuple(found))


def percentile(values: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(values, dtype=np.float64), q)) if len(values) else 0.0


def summarise(scores: Sequence[QueryScore], latencies_ms: Sequence[float], k: int) -> dict[str, Any]:
    """Means over the queries, and the latency percentiles. Pure."""
    n = len(scores)
    mean = (lambda xs: float(sum(xs) / n) if n else 0.0)  # noqa: E731
    return {"queries": n, "k": k, "recall": mean([s.recall for s in scores]), "mrr": mean([s.rr for s in scores]),
            "ndcg10": mean([s.ndcg10 for s in scores]), "zero_hit": mean([0.0 if s.hit else 1.0 for s in scores]),
            "p50_ms": percentile(latencies_ms, 50), "p99_ms": percentile(latencies_ms, 99)}


def worse_queries(candidate: Sequence[QueryScore], baseline: Sequence[QueryScore]) -> list[int]:
    """Indexes of the queries whose nDCG@10 dropped against the baseline, worst drop first. Pure."""
    drops = [(b.ndcg10 - c.ndcg10, i) for i, (c, b) in enumerate(zip(candidate, baseline)) if c.ndcg10 < b.ndcg10 - 1e-9]
    return [i for _, i in sorted(drops, key=lambda d: (-d[0], d[1]))]


# --------------------------------------------------------------------------- running the queries


@dataclass
class Run:
    """One collection's answers to the query set."""

    collection: str
    towers: dict[str, str]    # query kind -> model name
    scores: list[QueryScore] = field(default_factory=list)
    top: list[list[int]] = field(default_factory=list)
    latencies_ms: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    metric: str = "IP"
    pairs: list[tuple[float, bool]] = field(default_factory=list)  # (score, relevant) of every result


def _towers(manifest: dict, model: str | None) -> dict[str, str]:
    towers = manifest.get("towers") or {}
    out = {kind: towers[kind]["name"] for kind in ("text", "image") if kind in towers}
    if not out and manifest.get("name"):
        out[manifest.get("tower", "text")] = manifest["name"]
    if model:
        out = {kind: model for kind in ("text", "image")}
    return out


def run_queries(client, name: str, queries: Sequence[LabelledQuery], repository: ModelRepository, k: int, *,
                model: str | None = None, threads: int = 0) -> Run:
    """Every query against collection (or alias) ``name``, one at a time."""
    manifest = read_manifest(client, name)
    collection = manifest["collection"]
    ensure_loaded(client, collection)
    metric = (manifest.get("index") or {}).get("metric") or manifest.get("metric") or "IP"
    run = Run(collection, _towers(manifest, model), metric=metric)
    loaded: dict[str, QueryTower] = {}
    limit = max(k, NDCG_DEPTH)

    def tower(kind: str) -> QueryTower:
        model_name = run.towers.get(kind)
        if model_name is None:
            raise JobError(f"collection {collection} was built by an export without a {kind} tower "
                           f"(towers: {sorted(run.towers)}): it cannot answer {kind} queries; pass --model")
        if model_name not in loaded:
            try:
                loaded[model_name] = QueryTower.load(repository.folder(model_name), intra_op_threads=threads)
            except ValueError as exc:
                raise JobError(f"query model {model_name!r}: {exc}") from None
        return loaded[model_name]

    def answer(query: LabelledQuery):
        encoder = tower(query.kind)
        vector = encoder.text(query.text) if query.kind == "text" else encoder.image(query.image)
        return search(client, collection, vector[None, :], limit, metric=metric)[0]

    if queries:
        answer(queries[0])  # warm-up: loads the towers and the collection's first search
    started = time.perf_counter()
    for query in queries:
        t0 = time.perf_counter()
        found = answer(query)
        run.latencies_ms.append((time.perf_counter() - t0) * 1000)
        top = found.ids.tolist()
        run.pairs += judged(found.scores.tolist(), top, {i for label in query.labels for i in label.ids})
        run.top.append(top)
        run.scores.append(judge(top, query.labels, k))
    run.wall_s = time.perf_counter() - started
    return run


def _names_anything(client, name: str) -> bool:
    try:
        resolve_collection(client, name)
        return True
    except MilvusStoreError:
        return False


# --------------------------------------------------------------------------- the report


def report_uri(workdir: str, collection: str) -> str:
    return artifacts.join(workdir, REPORTS, f"{collection}.json")


def build_report(queries: Sequence[LabelledQuery], run: Run, baseline: Run | None, k: int,
                 query_set: str, query_set_sha256: str) -> dict[str, Any]:
    summary: dict[str, Any] = {"collection": run.collection, **summarise(run.scores, run.latencies_ms, k),
                               "qps": len(queries) / run.wall_s if run.wall_s else 0.0}
    worse: list[int] = []
    if baseline is not None:
        base = summarise(baseline.scores, baseline.latencies_ms, k)
        summary["compare"] = {"collection": baseline.collection, **{m: base[m] for m in
                                                                  ("recall", "mrr", "ndcg10", "zero_hit", "p99_ms")}}
        summary["regression"] = base["recall"] - summary["recall"]
        worse = worse_queries(run.scores, baseline.scores)
        summary["worse"] = len(worse)
    rows = []
    for i, query in enumerate(queries):
        score = run.scores[i]
        row = {"line": query.line, "kind": query.kind, "query": query.text, "labels": [lb.name for lb in query.labels],
               "found": list(score.found), "recall": score.recall, "rr": score.rr, "ndcg10": score.ndcg10,
               "ms": run.latencies_ms[i], "top": run.top[i][:k]}
        if baseline is not None:
            b = baseline.scores[i]
            row["compare"] = {"recall": b.recall, "rr": b.rr, "ndcg10": b.ndcg10, "found": list(b.found)}
        rows.append(row)
    missing = unresolved(queries)
    summary["unresolved"] = len(missing)
    return {"summary": summary, "query_set": query_set, "query_set_sha256": query_set_sha256,
            "towers": run.towers, "created_at": time.time(), "unresolved": missing,
            "worse": [rows[i]["line"] for i in worse], "queries": rows}


def markdown(report: dict[str, Any]) -> str:
    s, k = report["summary"], report["summary"]["k"]
    base = s.get("compare")
    lines = [f"# Evaluation of `{s['collection']}`", "",
             f"{s['queries']} queries from `{report['query_set']}`, k = {k}.", "",
             f"| metric | {s['collection']} |" + (f" {base['collection']} |" if base else ""),
             "| --- | --- |" + (" --- |" if base else "")]
    for key, title in (("recall", f"recall@{k}"), ("mrr", "MRR"), ("ndcg10", "nDCG@10"), ("zero_hit", "no-hit share"),
                       ("p99_ms", "p99 ms")):
        lines.append(f"| {title} | {s[key]:.4f} |" + (f" {base[key]:.4f} |" if base else ""))
    lines += ["", f"p50 {s['p50_ms']:.2f} ms, {s['qps']:.1f} queries/s (one at a time)."]
    if base:
        lines += ["", f"## Queries that got worse against `{base['collection']}` ({len(report['worse'])})", ""]
        by_line = {q["line"]: q for q in report["queries"]}
        for line in report["worse"]:
            q = by_line[line]
            lines.append(f"- line {line}: {q['query']!r}: nDCG@10 {q['compare']['ndcg10']:.3f} -> {q['ndcg10']:.3f} "
                         f"(found {q['compare']['found'] or 'nothing'} -> {q['found'] or 'nothing'})")
    missed = [q for q in report["queries"] if not q["found"]]
    lines += ["", f"## Queries with no relevant result in the top {k} ({len(missed)})", ""]
    lines += [f"- line {q['line']}: {q['query']!r} (wanted {', '.join(q['labels'])})" for q in missed]
    if report["unresolved"]:
        lines += ["", "## Labels that name no document of the corpus", ""]
        lines += [f"- {name}" for name in report["unresolved"]]
    return "\n".join(lines) + "\n"


def summary_line(summary: dict[str, Any]) -> str:
    k = summary["k"]
    text = (f"evaluate: {summary['collection']}: recall@{k} {summary['recall']:.3f}, MRR {summary['mrr']:.3f}, "
            f"nDCG@10 {summary['ndcg10']:.3f}, no hit {summary['zero_hit']:.1%}, p50 {summary['p50_ms']:.1f} ms, "
            f"p99 {summary['p99_ms']:.1f} ms over {summary['queries']} queries")
    if summary.get("cutoff"):
        c = summary["cutoff"]
        text += (f"; cutoff at precision {c['precision']:g}: " + (
            f"score {c['score']:.4f} keeps {c['kept']} of {c['judged']} results" if c["score"] is not None
            else "no score reaches it (none recorded)"))
    if "compare" in summary:
        text += (f"; {summary['compare']['collection']}: recall@{k} {summary['compare']['recall']:.3f} "
                 f"(regression {summary['regression']:+.3f}), {summary['worse']} queries worse")
    return text


# --------------------------------------------------------------------------- the stage


def evaluate(milvus_uri: str, collection: str, queries: str, repository: str, workdir: str, *,
             compare: str | None = None, k: int = 10, model: str | None = None, threads: int = 0,
             summary_file: str | None = None, token: str = "", timeout: float = 10.0,
             calibrate_precision: float | None = None) -> dict[str, Any]:
    """Evaluate ``collection`` (and ``compare``) on the query set; writes the report; returns its summary."""
    limits = request_limits()
    if calibrate_precision is not None and not 0.0 < calibrate_precision <= 1.0:
        raise JobError(f"--calibrate-precision {calibrate_precision}: give the target precision, in (0, 1]")
    if not 1 <= k <= limits.top_k:
        raise JobError(f"--k {k}: give 1 to {limits.top_k} (the most results one search may ask for, "
                       "MMSEARCH_MAX_TOP_K)")
    check_summary_file(summary_file)
    try:
        data = artifacts.read_bytes(queries)
    except artifacts.ArtifactError as exc:
        raise JobError(f"--queries {queries}: {exc}") from None
    rows = parse_query_set(data, queries, limits)
    needs_corpus = any(row.get("relevant") for row in rows)
    records = read_corpus(workdir).records if needs_corpus or artifacts.exists(corpus_uri(workdir)) else None
    labelled = resolve_labels(rows, records, queries, limits)
    repo = ModelRepository(repository)
    with session(milvus_uri, f"while evaluating {collection}", token=token, timeout=timeout) as client:
        run = run_queries(client, collection, labelled, repo, k, model=model, threads=threads)
        cutoff = None
        if calibrate_precision is not None:
            if run.metric not in SIMILARITIES:
                raise JobError(f"--calibrate-precision: {run.collection} ranks by {run.metric} distance (smaller "
                               f"is better); a score cutoff is calibrated for {' or '.join(SIMILARITIES)} only")
            cutoff = {**calibrate(run.pairs, calibrate_precision), "queries": len(labelled), "metric": run.metric,
                      "depth": max(k, NDCG_DEPTH), "query_set_sha256": hashlib.sha256(data).hexdigest(),
                      "at": time.time()}
            update_state(client, run.collection, cutoff=cutoff)
        baseline = None
        if compare and not _names_anything(client, compare):
            print(f"warning: --compare {compare}: no collection or alias of that name (nothing published yet?); "
                  "the report has no comparison", file=sys.stderr, flush=True)
        elif compare:
            baseline = run_queries(client, compare, labelled, repo, k, threads=threads)
    report = build_report(labelled, run, baseline, k, queries, hashlib.sha256(data).hexdigest())
    if cutoff is not None:
        report["summary"]["cutoff"] = cutoff
    target = report_uri(workdir, run.collection)
    artifacts.write_bytes(target, json.dumps(report, indent=2).encode())
    artifacts.write_bytes(target[:-len(".json")] + ".md", markdown(report).encode())
    summary = {**report["summary"], "report": target}
    missing = report["unresolved"]
    if missing:
        print(f"warning: {queries}: {len(missing)} labels name no document of the corpus and counted as misses "
              f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}); the report lists them, and a "
              "quality gate refuses to judge this evaluation", file=sys.stderr, flush=True)
    write_summary_file(summary_file, summary, f"the report is at {target}")
    return summary


@job_app.command("evaluate")
def evaluate_command(
    milvus_uri: MilvusUri,
    repository: ModelRepositoryUri,
    workdir: Workdir,
    queries: str = typer.Option(..., envvar="MMSEARCH_QUERIES", help="The labelled query set (JSONL, path or s3://)."),
    collection: str = typer.Option(..., envvar="MMSEARCH_COLLECTION", help="The Milvus collection (or alias) to measure."),
    compare: str = typer.Option(None, envvar="MMSEARCH_COMPARE", help="Another collection or alias (the published one)."),
    k: int = typer.Option(10, envvar="MMSEARCH_K", help="Depth of recall@k, MRR and the no-hit share (1 to MMSEARCH_MAX_TOP_K)."),
    model: Model = None,
    threads: OnnxThreads = 0,
    summary_file: str = typer.Option(None, envvar="MMSEARCH_SUMMARY_FILE", help="Also write the summary JSON here."),
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
    calibrate_precision: float = typer.Option(
        None, envvar="MMSEARCH_CALIBRATE_PRECISION",
        help="Calibrate and record with the version the lowest score that keeps this precision (0..1]: "
             "serving's min_score: auto."),
) -> None:
    """Measure recall@k, MRR, nDCG@10, no-hit share and latency on a labelled query set; write the report."""
    with exit_on_error():
        summary = evaluate(milvus_uri, collection, queries, repository, workdir, compare=compare, k=k, model=model,
                           threads=threads, summary_file=summary_file, token=milvus_token, timeout=timeout,
                           calibrate_precision=calibrate_precision)
        print(summary_line(summary), file=sys.stderr, flush=True)
        emit("evaluate", "done", **summary)
