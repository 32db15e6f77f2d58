"""evaluate: the figures of one ranked list computed by hand, then the whole stage on a tiny collection
whose rankings are known by construction (vectors placed at chosen cosines from the real MiniLM
query vectors), the comparison against another collection, the report files, and bad input."""
from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest

from mmsearch.jobs.corpus import CORPUS_FILE, Corpus
from mmsearch.jobs.errors import JobError
from mmsearch.jobs.evaluate import Label, evaluate, judge, summarise, worse_queries
from mmsearch.jobs.push_milvus import push_vectors
from mmsearch.core.model_repository import ModelRepository
from mmsearch.core.query_tower import QueryTower
from tests.jobs.milvus_data import corpus_bytes

Q1, Q2 = "read rows from a comma separated file", "pick a random integer between two numbers"
LOG = [1 / math.log2(r + 1) for r in range(1, 12)]  # LOG[r - 1]: the discount at rank r


def labels(*id_sets) -> list[Label]:
    return [Label(f"l{n}", frozenset(ids)) for n, ids in enumerate(id_sets)]


def test_judge_by_hand():
    # ranks: 1 -> 7, 2 -> 3, 3 -> 9, 4 -> 5, 5 -> 1; labels {3}, {5, 6} (any of two documents), {42} (never found)
    score = judge([7, 3, 9, 5, 1], labels({3}, {5, 6}, {42}), k=3)
    assert score.found == ("l0",) and score.recall == pytest.approx(1 / 3) and score.rr == pytest.approx(1 / 2)
    assert score.ndcg10 == pytest.approx((LOG[1] + LOG[3]) / (LOG[0] + LOG[1] + LOG[2]))
    # a document that finds two labels counts both; a label found twice counts once
    both = judge([4, 4, 8], labels({4}, {4, 8}), k=10)
    assert both.recall == 1.0 and both.rr == 1.0 and both.ndcg10 == pytest.approx((LOG[0]) / (LOG[0] + LOG[1]))
    miss = judge([1, 2, 3], labels({9}), k=3)
    assert (miss.recall, miss.rr, miss.ndcg10, miss.hit) == (0.0, 0.0, 0.0, False)


def test_summarise_and_worse_queries():
    a, b, c = judge([1], labels({1}), 1), judge([2, 1], labels({1}), 1), judge([3], labels({1}), 1)
    summary = summarise([a, b, c], [1.0, 2.0, 3.0], k=1)
    assert summary["recall"] == pytest.approx(1 / 3) and summary["zero_hit"] == pytest.approx(2 / 3)
    assert summary["mrr"] == pytest.approx(1 / 3) and summary["p50_ms"] == 2.0
    assert summary["ndcg10"] == pytest.approx((1 + LOG[1]) / 3)
    assert worse_queries([c, a, b], [a, a, a]) == [0, 2]  # worst drop first


def unit(v: np.ndarray) -> np.ndarray:
    return v / np.linalg.norm(v)


def placed(query: np.ndarray, cosine: float, away: np.ndarray) -> np.ndarray:
    """A unit vector at exactly ``cosine`` from ``query`` (``away`` is a unit vector orthogonal to it)."""
    return cosine * query + math.sqrt(1 - cosine ** 2) * away


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, minilm_repo):
    """Collections ``tiny_base`` and ``tiny_cand`` (``tiny_cand`` lacks document 203) and a query set."""
    tmp = tmp_path_factory.mktemp("evaluate")
    tower = QueryTower.load(ModelRepository(minilm_repo).folder("minilm"))
    e1, e2 = tower.text(Q1), tower.text(Q2)
    rho = float(e1 @ e2)
    assert abs(rho) < 0.8, "the construction below needs two fairly different queries"
    # An orthonormal basis orthogonal to both query vectors for the "away" directions.
    basis, _ = np.linalg.qr(np.column_stack([e1, e2, np.random.default_rng(0).standard_normal((len(e1), 20))]))
    away = [basis[:, 2 + j] for j in range(20)]
    rows = {101: placed(e1, 0.95, away[0]), 102: placed(e1, 0.90, away[1]), 103: placed(e1, 0.85, away[2]),
            104: placed(e1, 0.80, away[3]), 201: placed(e2, 0.95, away[4]), 202: placed(e2, 0.90, away[5]),
            203: placed(e2, 0.85, away[6])}
    rows.update({300 + j: away[7 + j] for j in range(10)})  # fillers: cosine 0 to both queries
    records = [{"id": i, "question": f"doc-{i}"} for i in sorted(rows)]
    workdir = tmp / "work"
    workdir.mkdir()
    (workdir / CORPUS_FILE).write_bytes(corpus_bytes(records))
    milvus = str(tmp / "milvus.db")
    manifest = ModelRepository(minilm_repo).manifest("minilm")
    for version, drop in (("base", None), ("cand", 203)):
        ids = np.array([i for i in sorted(rows) if i != drop], dtype=np.int64)
        vecs = np.stack([unit(rows[i]) for i in ids]).astype(np.float32)
        push_vectors(milvus, "tiny", version, manifest, [(ids, vecs)], len(ids),
                     Corpus([r for r in records if r["id"] != drop], "x"))
    queries = tmp / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"query": Q1, "relevant_ids": [102, 104, 999]},
        {"query": Q2, "relevant": {"question": "doc-203"}},
        {"query": Q1, "relevant_ids": [999]},
    ]) + "\n")
    return milvus, str(minilm_repo), workdir, queries


def test_evaluate_gives_the_figures_computed_by_hand(tiny):
    milvus, repo, workdir, queries = tiny
    summary = evaluate(milvus, "tiny_base", str(queries), repo, str(workdir), k=3)
    # q1: top 3 = 101, 102, 103 -> finds 102 of {102, 104, 999}; 104 at rank 4 counts in nDCG@10 only.
    q1 = (1 / 3, 1 / 2, (LOG[1] + LOG[3]) / (LOG[0] + LOG[1] + LOG[2]))
    q2 = (1.0, 1 / 3, LOG[2] / LOG[0])  # 201, 202, 203: the labelled document at rank 3
    q3 = (0.0, 0.0, 0.0)                # a label that names no document
    assert summary["queries"] == 3 and summary["k"] == 3
    assert summary["recall"] == pytest.approx((q1[0] + q2[0] + q3[0]) / 3)
    assert summary["mrr"] == pytest.approx((q1[1] + q2[1] + q3[1]) / 3)
    assert summary["ndcg10"] == pytest.approx((q1[2] + q2[2] + q3[2]) / 3, abs=1e-6)
    assert summary["zero_hit"] == pytest.approx(1 / 3)
    assert summary["p99_ms"] >= summary["p50_ms"] > 0
    report = json.loads((workdir / "evaluation" / "tiny_base.json").read_text())
    assert [q["top"] for q in report["queries"]][:2] == [[101, 102, 103], [201, 202, 203]]
    assert report["towers"] == {"text": "minilm"} and report["summary"]["collection"] == "tiny_base"
    assert "recall@3" in (workdir / "evaluation" / "tiny_base.md").read_text()


def test_compare_lists_the_queries_that_got_worse(tiny):
    milvus, repo, workdir, queries = tiny
    summary = evaluate(milvus, "tiny_cand", str(queries), repo, str(workdir), k=3, compare="tiny_base")
    assert summary["compare"]["collection"] == "tiny_base"
    assert summary["regression"] == pytest.approx(1 / 3)  # q2 lost its only label
    assert summary["worse"] == 1
    report = json.loads((workdir / "evaluation" / "tiny_cand.json").read_text())
    assert report["worse"] == [2]  # the query-set line of q2
    markdown = (workdir / "evaluation" / "tiny_cand.md").read_text()
    assert "Queries that got worse against `tiny_base` (1)" in markdown and "line 2" in markdown


@pytest.mark.parametrize("body, expected", [
    ('{"query": "x", "relevant_ids": [1]}\n{oops\n', "line 2: not valid JSON"),
    ('{"query": "x", "image": "a.png", "relevant_ids": [1]}\n', "line 1: give exactly one of 'query'"),
    ('{"query": "x"}\n', "line 1: no relevant documents"),
    ('{"query": "x", "relevant_ids": ["1"]}\n', "'relevant_ids' must be a list of integer ids"),
    ("\n", "no queries"),
])
def test_bad_query_sets_are_refused_naming_the_line(tiny, tmp_path, body, expected):
    milvus, repo, workdir, _ = tiny
    (tmp_path / "q.jsonl").write_text(body)
    with pytest.raises(JobError, match=expected):
        evaluate(milvus, "tiny_base", str(tmp_path / "q.jsonl"), repo, str(workdir))


def test_cli_errors_are_one_line(tiny, tmp_path):
    milvus, repo, workdir, queries = tiny
    cases = [
        (["--workdir", str(tmp_path / "nothing"), "--collection", "tiny_base"], "error: no corpus at"),
        (["--workdir", str(workdir), "--collection", "nope"], "error: no collection or alias named 'nope'"),
        (["--workdir", str(workdir), "--collection", "tiny_base", "--k", "0"], "error: --k 0"),
    ]
    for extra, expected in cases:
        result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "evaluate", "--milvus-uri", milvus,
                                 "--queries", str(queries), "--repository", repo, *extra],
                                capture_output=True, text=True, timeout=120)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_the_report_goes_to_s3(tiny, s3_server):
    from mmsearch.core import artifacts

    milvus, repo, workdir, queries = tiny
    remote = s3_server.uri("evaluate", "work")
    artifacts.write_bytes(artifacts.join(remote, CORPUS_FILE), (workdir / CORPUS_FILE).read_bytes())
    artifacts.write_bytes(s3_server.uri("evaluate", "queries.jsonl"), queries.read_bytes())
    summary = evaluate(milvus, "tiny_base", s3_server.uri("evaluate", "queries.jsonl"), repo, remote, k=3)
    assert summary["report"] == f"{remote}/evaluation/tiny_base.json"
    assert json.loads(artifacts.read_bytes(summary["report"]))["summary"]["recall"] == summary["recall"]
    assert artifacts.read_bytes(f"{remote}/evaluation/tiny_base.md").startswith(b"# Evaluation of `tiny_base`")


def test_calibrate_precision_records_the_cutoff_with_the_version(tiny):
    from mmsearch.core.milvus.connection import session
    from mmsearch.core.milvus.record import read_manifest

    milvus, repo, workdir, queries = tiny
    # Judged results, best first: 0.95 x3 (none relevant), 0.90 x3 (102 for q1), 0.85 x3 (203 for q2),
    # 0.80 x2 (104 for q1): 3 relevant of 11 at 0.80 (0.273); every lower score is irrelevant.
    summary = evaluate(milvus, "tiny_base", str(queries), repo, str(workdir), k=3, calibrate_precision=0.26)
    cutoff = summary["cutoff"]
    assert cutoff["score"] == pytest.approx(0.80, abs=1e-4)
    assert (cutoff["kept"], cutoff["relevant"], cutoff["queries"], cutoff["depth"]) == (11, 3, 3, 10)
    with session(milvus, "test") as client:
        assert read_manifest(client, "tiny_base")["cutoff"] == cutoff  # with the version, where serving reads it
    again = evaluate(milvus, "tiny_base", str(queries), repo, str(workdir), k=3, calibrate_precision=0.26)
    assert {k: v for k, v in again["cutoff"].items() if k != "at"} == {k: v for k, v in cutoff.items() if k != "at"}
    unreachable = evaluate(milvus, "tiny_base", str(queries), repo, str(workdir), k=3, calibrate_precision=0.5)
    assert unreachable["cutoff"]["score"] is None
    with session(milvus, "test") as client:
        assert read_manifest(client, "tiny_base")["cutoff"]["score"] is None
    with pytest.raises(JobError, match="--calibrate-precision 1.5"):
        evaluate(milvus, "tiny_base", str(queries), repo, str(workdir), calibrate_precision=1.5)
