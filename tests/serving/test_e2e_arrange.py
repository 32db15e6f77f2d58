"""A calibrated cutoff, then sort; collapse; highlights: end to end over real sockets (real MiniLM).

The stdlib corpus, each record given a number field ``length`` (its
description's characters), goes through the real jobs: ``encode``,
``push-milvus --fields category:keyword,length:number --bm25-fields
question,answer``, ``push-mongo``, ``evaluate --calibrate-precision`` on a
labelled set of module questions (each query's answers: a module's
documents), which records the cutoff with the version, and ``publish``. The
serving's arms: score order, the calibrated cutoff (``min_score: auto``),
hybrid and BM25.
"""
from __future__ import annotations

import functools
import json

import grpc
import pytest

from tests.fixtures.servers import STDLIB_INDEX_TEXT_FIELD
from tests.support.jobs import run_job
from tests.support.stack import MilvusServer, Stack, stub_of, t2t_config, write_config
from tests.support.stack import search as search_scene

pytestmark = pytest.mark.slow

SCENE = "arrange"
PRECISION = 0.6
QUERIES = [("compress and decompress files", ["gzip", "zipfile"]), ("read and write CSV files", "csv"),
           ("parse command line arguments", "argparse"), ("pick a random number", "random"),
           ("hash data with sha256", "hashlib"), ("run a child process and capture its output", "subprocess"),
           ("make a temporary directory", "tempfile"), ("encode bytes as base64 text", "base64"),
           ("create a unique identifier", "uuid"), ("start a thread and wait for it", "threading"),
           ("match text with a regular expression", "re"), ("copy a directory tree", "shutil"),
           ("serialize an object to JSON", "json"), ("execute SQL against a database", "sqlite3"),
           ("write log messages to a file", "logging"), ("the current date and time", "datetime")]
ARMS = [{"name": "control", "weight": 1},
        {"name": "cutoff", "weight": 0, "overrides": {"rank": {"name": "score_threshold",
                                                               "params": {"min_score": "auto"}}}},
        {"name": "hybrid", "weight": 0, "overrides": {"match": {"retriever": "hybrid"}}},
        {"name": "bm25", "weight": 0, "overrides": {"match": {"retriever": "bm25"}}}]


@pytest.fixture(scope="module")
def arranged(stdlib_index, stdlib_stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("arrange")
    workdir = tmp / "work"
    workdir.mkdir()
    records = [json.loads(line) for line in (stdlib_index.workdir / "corpus.jsonl").read_text().splitlines() if line]
    (workdir / "corpus.jsonl").write_text("".join(json.dumps({**r, "length": len(r["answer"])}) + "\n" for r in records))
    queries = tmp / "queries.jsonl"
    queries.write_text("".join(json.dumps({"query": q, "relevant": {"category": c}}) + "\n" for q, c in QUERIES))
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    repo = str(stdlib_index.repository)
    run_job("encode", "--workdir", str(workdir), "--repository", repo, "--model", stdlib_index.model,
            "--text-field", STDLIB_INDEX_TEXT_FIELD, "--device", "cpu")
    run_job("push-milvus", "--workdir", str(workdir), "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1",
            "--repository", repo, "--model", stdlib_index.model, "--fields", "category:keyword,length:number",
            "--bm25-fields", "question,answer")
    run_job("push-mongo", "--workdir", str(workdir), "--mongo-uri", stdlib_index.mongo_uri, "--collection", SCENE)
    evaluated = run_job("evaluate", "--workdir", str(workdir), "--milvus-uri", milvus.uri, "--repository", repo,
                        "--queries", str(queries), "--collection", f"{SCENE}_1",
                        "--calibrate-precision", str(PRECISION))
    cutoff = json.loads(evaluated.stdout.strip().splitlines()[-1])["cutoff"]
    assert cutoff["score"] is not None, cutoff
    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1")
    config = t2t_config(SCENE, model=stdlib_index.model, fields=("category:keyword", "length:number"))
    config["scenes"][SCENE]["defaults"]["match"]["candidates"] = 60
    config["scenes"][SCENE]["defaults"]["summary"]["fields"] = ["question", "answer", "category", "length"]
    config["scenes"][SCENE]["layers"][0]["arms"] = ARMS
    experiments = tmp / "experiments.yaml"
    write_config(experiments, config)
    settings = stdlib_stack.serving_settings.model_copy(update={"experiments": experiments, "milvus_uri": milvus.uri})
    stack = Stack(stdlib_stack.loop, stdlib_stack.models, settings, preprocess_port=stdlib_stack.preprocess_port)
    stack.start_serving()
    stack.wait_serving()
    stack.extra.update(cutoff=cutoff)
    yield stack
    stack.close()
    milvus.stop()


stub = stub_of("arranged")
search = functools.partial(search_scene, scene=SCENE)


def pages(stub, size: int, **fields) -> list:
    """Every page of one search, in order."""
    out, token = [], ""
    while True:
        response = search(stub, page_size=size, page_token=token, **fields)
        out.append(response)
        token = response.next_page_token
        if not token:
            return out


def test_sort_after_the_calibrated_cutoff_pages_in_the_fields_order(stub, arranged):
    cutoff = arranged.extra["cutoff"]["score"]
    common = dict(text="read and write files", force_arms={"ranking": "cutoff"})
    kept = search(stub, page_size=60, **common)  # the score order, cut
    assert kept.cutoff == pytest.approx(cutoff) and 0 < len(kept.items) < 60
    assert all(item.score >= cutoff - 1e-6 for item in kept.items)
    for sort, descending in (("-length", True), ("length", False)):
        walked = pages(stub, 4, sort=sort, **common)
        items = [item for page in walked for item in page.items]
        ids = [item.id for item in items]
        assert len(set(ids)) == len(ids) and set(ids) == {item.id for item in kept.items}  # disjoint, all of them
        assert all(page.cutoff == pytest.approx(cutoff) for page in walked)
        assert all(item.score >= cutoff - 1e-6 for item in items)  # every item above the cutoff, score shown
        lengths = [item.summary["length"] for item in items]
        assert lengths == sorted(lengths, reverse=descending) and lengths == [len(i.summary["answer"]) for i in items]
        assert [i.id for i in search(stub, page_size=60, sort=sort, **common).items] == ids  # pages = one page
    plain = search(stub, page_size=60, text="read and write files", sort="-length")
    assert not plain.HasField("cutoff") and len(plain.items) == 60  # no cutoff: the whole candidate pool, sorted


def test_collapse_keeps_one_hit_per_module_with_the_folded_count(stub):
    common = dict(text="read data from a file", collapse="category", facets=["category"])
    walked = pages(stub, 3, **common)
    items = [item for page in walked for item in page.items]
    categories = [item.summary["category"] for item in items]
    assert len(categories) == len(set(categories)) > 3  # one per module, across pages
    [facet] = walked[0].facets  # counted before collapsing: the 60 candidates
    counts = {c.value: c.count for c in facet.counts}
    assert facet.candidates == 60 and sum(counts.values()) == 60
    assert {item.summary["category"]: item.folded + 1 for item in items} == counts
    whole = search(stub, page_size=60, **common)
    assert [i.id for i in whole.items] == [i.id for i in items]
    scores = [i.score for i in items]
    assert scores == sorted(scores, reverse=True)  # the best of each module, in score order
    uncollapsed = search(stub, page_size=60, text="read data from a file")
    best = {}
    for item in uncollapsed.items:
        best.setdefault(item.summary["category"], item.id)
    assert {i.summary["category"]: i.id for i in items} == best


def test_collapse_then_sort(stub):
    items = search(stub, page_size=60, text="read data from a file", collapse="category", sort="-length").items
    assert len({i.summary["category"] for i in items}) == len(items)
    lengths = [i.summary["length"] for i in items]
    assert lengths == sorted(lengths, reverse=True)


def words(text: str, spans) -> list[str]:
    points = list(text)
    return ["".join(points[s.start:s.end]) for s in spans]


def test_highlights_mark_the_query_words_or_the_best_sentence(stub):
    response = search(stub, text="parse command line arguments", highlight=True, force_arms={"ranking": "hybrid"},
                      top_k=20)
    lexical = [i for i in response.items if any(f.retriever == "bm25" for f in i.found_by)]
    assert lexical
    for item in lexical:
        assert item.highlights and all(h.kind == "terms" for h in item.highlights)
        for h in item.highlights:
            marked = {w.lower() for w in words(item.summary[h.field], h.spans)}
            assert marked and marked <= {"parse", "parsing", "parser", "parses", "parsed", "command", "commands",
                                         "line", "lines", "argument", "arguments"}, marked
    dense = search(stub, text="parse command line arguments", highlight=True, top_k=10)
    sentences = [h for item in dense.items for h in item.highlights]
    assert sentences and all(h.kind == "sentence" and len(h.spans) == 1 for h in sentences)
    assert not search(stub, text="parse command line arguments", top_k=10).items[0].highlights  # only when asked


@pytest.mark.parametrize("fields, words_", [
    (dict(sort="category"), "sort: 'category' is a keyword field"),
    (dict(sort="-nope"), "sort: 'nope' is not a field of the scene"),
    (dict(sort="-"), "sort: give a field name"),
    (dict(collapse="length"), "collapse: 'length' is a number field"),
])
def test_sort_and_collapse_on_a_wrong_field_are_invalid_argument(stub, fields, words_):
    with pytest.raises(grpc.RpcError) as caught:
        search(stub, text="json", **fields)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words_ in caught.value.details()


def test_a_page_token_of_another_sort_is_refused(stub):
    first = search(stub, text="read a file", page_size=5, sort="length")
    with pytest.raises(grpc.RpcError) as caught:
        search(stub, text="read a file", page_size=5, sort="-length", page_token=first.next_page_token)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "page_token" in caught.value.details()
