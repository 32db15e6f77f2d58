"""Filters, facets, pages, more like this and hybrid retrieval end to end over real sockets (real MiniLM).

The stdlib index's vectors are pushed by the real ``push-milvus`` job (with
``--fields category:keyword --bm25-fields question,answer``) twice, as
versions ``a`` and ``b``, into the Milvus Lite engine listening on TCP, so a
``publish`` job process can move the alias while this process serves. The
serving runs beside the shared stdlib stack's preprocess with a config whose
layers force each ranker and each retriever.
"""
from __future__ import annotations

import functools

import grpc
import pytest

from mmsearch.v1 import retrieval_pb2
from tests.fixtures.servers import STDLIB_INDEX_LAYOUT
from tests.support.jobs import run_job
from tests.support.stack import MilvusServer, Stack, stub_of, t2t_config, write_config
from tests.support.stack import search as search_scene

pytestmark = pytest.mark.slow

SCENE = "features"
Filter, Value = retrieval_pb2.Filter, retrieval_pb2.FilterValue
RETRIEVERS = [
    {"name": "dense", "weight": 1},
    {"name": "bm25", "weight": 0, "overrides": {"match": {"retriever": "bm25"}}},
    {"name": "rrf", "weight": 0, "overrides": {"match": {"retriever": "hybrid", "fusion": {"name": "rrf"}}}},
    {"name": "weighted", "weight": 0, "overrides": {"match": {"retriever": "hybrid", "fusion": {
        "name": "weighted", "params": {"weights": {"dense": 0.5, "bm25": 0.5}}}}}},
]


def config(stdlib_index) -> dict:
    cfg = t2t_config(SCENE, model=stdlib_index.model, fields=("category:keyword",))
    scene = cfg["scenes"][SCENE]
    scene["defaults"]["match"]["candidates"] = 60  # the MMR pool: 5 pages of 10 fit in it
    scene["defaults"]["summary"]["collection"] = stdlib_index.collection
    scene["layers"][0]["arms"].append({"name": "mmr", "weight": 0,
                                       "overrides": {"rank": {"name": "mmr", "params": {"lambda": 0.5}}}})
    scene["layers"].append({"name": "retrieval", "arms": RETRIEVERS})
    return cfg


@pytest.fixture(scope="module")
def features(stdlib_index, stdlib_stack, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("features")
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    repo = str(stdlib_index.repository)
    for version in ("a", "b"):
        run_job("push-milvus", "--workdir", str(stdlib_index.workdir), "--milvus-uri", milvus.uri, "--scene", SCENE,
                "--version", version, "--repository", repo, "--model", stdlib_index.model, *STDLIB_INDEX_LAYOUT)
    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "a", "--keep", "3")
    experiments = tmp / "experiments.yaml"
    write_config(experiments, config(stdlib_index))
    settings = stdlib_stack.serving_settings.model_copy(update={"experiments": experiments, "milvus_uri": milvus.uri})
    stack = Stack(stdlib_stack.loop, stdlib_stack.models, settings, preprocess_port=stdlib_stack.preprocess_port)
    stack.start_serving()
    stack.wait_serving()
    stack.extra.update(milvus=milvus)
    yield stack
    stack.close()
    milvus.stop()


stub = stub_of("features")


search = functools.partial(search_scene, scene=SCENE)  # search(stub, text=..., filters=...)


def refused(stub, **fields) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as caught:
        search(stub, **fields)
    return caught.value


def category(*values: str, op=Filter.EQ) -> Filter:
    return Filter(field="category", op=op, values=[Value(text=v) for v in values])


def names(response) -> list[str]:
    return [item.summary["question"] for item in response.items]


def test_a_category_filter_keeps_only_that_module_and_still_finds_the_answer(stub):
    # The json module holds 23 documents (functions, classes and methods): the answer must rank, not just fit.
    plain = search(stub, text="parse a JSON document into Python objects", top_k=15)
    assert {i.summary["category"] for i in plain.items} != {"json"}  # unfiltered, other modules come in
    only = search(stub, text="parse a JSON document into Python objects", top_k=15, filters=[category("json")])
    assert {i.summary["category"] for i in only.items} == {"json"} and "json.loads" in names(only)
    several = search(stub, text="read a file", top_k=20, filters=[category("csv", "gzip", op=Filter.IN)])
    assert {i.summary["category"] for i in several.items} == {"csv", "gzip"}
    others = search(stub, text="read and write CSV files", top_k=20, filters=[category("csv", op=Filter.NOT)])
    assert others.items and "csv" not in {i.summary["category"] for i in others.items}


def test_a_filter_on_an_undeclared_field_is_invalid_argument(stub):
    error = refused(stub, text="json", filters=[Filter(field="kind", op=Filter.EQ, values=[Value(text="module")])])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "filters[0] (field 'kind'): the scene has no filterable field 'kind'" in error.details()


@pytest.mark.parametrize("value", ['x" or id > 0 or "', 'json" or category != "', "json\\", "\\\" || true || \\\""])
def test_quotes_backslashes_and_operators_in_a_value_are_matched_literally(stub, value):
    assert search(stub, text="json", top_k=20, filters=[category(value)]).items == []
    kept = search(stub, text="json", top_k=20, filters=[category(value, op=Filter.NOT)])
    assert len(kept.items) == 20  # nothing has that category: NOT keeps everything


def test_facets_count_the_modules_of_the_candidates(stub):
    response = search(stub, text="read and write CSV files", facets=["category"])
    [facet] = response.facets
    assert facet.field == "category" and facet.candidates == 60
    counts = {c.value: c.count for c in facet.counts}
    assert sum(counts.values()) == 60 and counts["csv"] >= 5
    assert [c.count for c in facet.counts] == sorted(counts.values(), reverse=True)


@pytest.mark.parametrize("arm", ["control", "mmr", "threshold"])
def test_five_pages_of_ten_are_one_page_of_fifty(stub, arm):
    common = dict(text="read and write files", force_arms={"ranking": arm})
    whole = search(stub, page_size=50, **common)
    ids, token = [], ""
    for page in range(5):
        response = search(stub, page_size=10, page_token=token, **common)
        assert response.offset == page * 10 and len(response.items) == 10
        ids += [item.id for item in response.items]
        token = response.next_page_token
    assert len(set(ids)) == 50 and ids == [item.id for item in whole.items]


def test_an_old_request_gets_the_same_answer(stub):
    """No page fields: the first page of top_k, as before pages existed (a next token, ignored by old clients)."""
    response = search(stub, text="sqlite database", top_k=7)
    paged = search(stub, text="sqlite database", page_size=7)
    assert [i.id for i in response.items] == [i.id for i in paged.items] and response.next_page_token


def test_more_like_this_csv_reader(stub):
    reader = next(i for i in search(stub, text="csv reader", top_k=10).items if i.summary["question"] == "csv.reader")
    response = search(stub, similar_to=reader.id, top_k=10)
    assert [t.stage for t in response.timings] == ["fetch", "match", "rank", "summary"]
    assert reader.id not in [i.id for i in response.items]
    assert [i.summary["category"] for i in response.items[:5]] == ["csv"] * 5
    error = refused(stub, similar_to=12345)
    assert error.code() == grpc.StatusCode.NOT_FOUND and "no item with id 12345" in error.details()


NOTHING = [category("nosuch")]  # a filter no document matches
EMPTY_QUERIES = {  # what the hostile probe sent: each leaves at least one retriever with no candidate
    "punctuation": dict(text="?!.,;:-"),
    "unknown word, diversified": dict(text="xyzzyplugh", diversify=True),
    "stop words": dict(text="the of and"),
    "filter matching nothing": dict(text="read a file", filters=NOTHING),
}


@pytest.mark.parametrize("retrieval", [arm["name"] for arm in RETRIEVERS])
@pytest.mark.parametrize("query", list(EMPTY_QUERIES))
def test_no_candidate_is_an_ok_answer_with_no_items_for_every_ranker(stub, retrieval, query):
    """MMR failed UNAVAILABLE ("cannot reshape array of size 0") whenever a retriever found nothing."""
    fields = EMPTY_QUERIES[query]
    answers = {ranking: search(stub, force_arms={"ranking": ranking, "retrieval": retrieval}, page_size=5, **fields)
               for ranking in ("control", "mmr")}
    lexical_only = retrieval == "bm25" and query in ("punctuation", "unknown word, diversified")
    if "filters" in fields or lexical_only:
        assert [r.items for r in answers.values()] == [[], []] and not answers["mmr"].next_page_token


def test_more_like_this_with_a_filter_matching_nothing_is_empty_not_an_error(stub):
    item = search(stub, text="read a csv file", top_k=1).items[0].id
    for fields in (dict(diversify=True), dict(force_arms={"ranking": "mmr"}), {}):
        assert search(stub, similar_to=item, filters=NOTHING, **fields).items == []


def test_a_malformed_request_is_invalid_argument(features):
    with grpc.insecure_channel(features.address) as channel:
        raw = channel.unary_unary("/mmsearch.v1.RetrievalService/Search")  # no serializer: bytes as they are
        with pytest.raises(grpc.RpcError) as caught:
            raw(b"\xff\xff\xff\xff\x0f", timeout=10)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not a valid mmsearch.v1.SearchRequest message" in caught.value.details()


def test_a_rare_exact_word_is_found_by_bm25_and_hybrid_not_by_dense(stub):
    """``mkstemp`` appears only in the item's name (its BM25 text); its docstring, which the dense tower
    encoded, never says it, and the word means little to MiniLM."""
    found = {}
    for arm in ("dense", "bm25", "rrf", "weighted"):
        response = search(stub, text="mkstemp", top_k=10, force_arms={"retrieval": arm})
        found[arm] = names(response)
        if arm == "bm25":
            assert [t.stage for t in response.timings] == ["match", "rank", "summary"]
    assert "tempfile.mkstemp" not in found["dense"]
    assert found["bm25"][0] == "tempfile.mkstemp"
    assert "tempfile.mkstemp" in found["rrf"][:3] and "tempfile.mkstemp" in found["weighted"][:3]
    hybrid = search(stub, text="mkstemp", top_k=10, force_arms={"retrieval": "rrf"})
    item = next(i for i in hybrid.items if i.summary["question"] == "tempfile.mkstemp")
    assert [(f.retriever, f.rank) for f in item.found_by][-1] == ("bm25", 1)
    assert {f.retriever for i in hybrid.items for f in i.found_by} == {"dense", "bm25"}


def test_rrf_fusion_matches_milvus_hybrid_search(stub, features):
    """Serving fuses the two lists itself; its RRF score of an item is Milvus's RRFRanker(60) on the same lists.

    Exact score ties (duplicate docstrings, equal BM25 scores) rank in an arbitrary order, and Milvus orders
    them differently from serving (by id), so items tied with another in either list are left out."""
    from collections import Counter

    from pymilvus import AnnSearchRequest, MilvusClient, RRFRanker

    text = "compress a file"
    response = search(stub, text=text, page_size=20, force_arms={"retrieval": "rrf"})
    query = features.loop.call(_embed(features, text)).tolist()
    client = MilvusClient(uri=features.extra["milvus"].uri)
    try:
        collection = response.collection
        dense = client.search(collection, data=[query], anns_field="vector", limit=60,
                              search_params={"metric_type": "IP"})[0]
        bm25 = client.search(collection, data=[text], anns_field="sparse", limit=60,
                             search_params={"metric_type": "BM25"})[0]
        requests = [AnnSearchRequest([query], "vector", {"metric_type": "IP"}, 60),
                    AnnSearchRequest([text], "sparse", {"metric_type": "BM25"}, 60)]
        theirs = {h["id"]: h["distance"] for h in client.hybrid_search(collection, requests, RRFRanker(60), limit=20)[0]}
    finally:
        client.close()
    tied = set()
    for hits in (dense, bm25):
        counts = Counter(round(h["distance"], 5) for h in hits)
        tied |= {h["id"] for h in hits if counts[round(h["distance"], 5)] > 1}
    ours = {i.id: i.retrieval_score for i in response.items}
    compared = [i for i in ours if i in theirs and i not in tied]
    assert len(compared) >= 5, (len(tied), ours, theirs)
    assert [ours[i] for i in compared] == pytest.approx([theirs[i] for i in compared], rel=1e-5)


async def _embed(stack, text: str):
    backends = stack.serving.backends
    inputs = await backends.preprocess.text("minilm", text, 5.0)
    encoder = stack.serving.store.current.encoders[("embedded", "minilm")]
    return (await encoder.infer(inputs))[0]


def test_a_publish_between_pages_fails_the_next_page(stub, features):
    first = search(stub, text="regular expressions", page_size=10)
    assert first.collection == f"{SCENE}_a" and first.next_page_token
    run_job("publish", "--milvus-uri", features.extra["milvus"].uri, "--scene", SCENE, "--version", "b", "--keep", "3")
    features.wait_route(SCENE, f"{SCENE}_b")
    error = refused(stub, text="regular expressions", page_size=10, page_token=first.next_page_token)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"the index changed since the first page (it was served by {SCENE}_a" in error.details()
    again = search(stub, text="regular expressions", page_size=10)
    assert again.collection == f"{SCENE}_b" and [i.id for i in again.items] == [i.id for i in first.items]
