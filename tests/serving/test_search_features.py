"""Filters, facets, pages, more like this and retrievers through the Searcher, on fake backends (no sockets)."""
from __future__ import annotations

import dataclasses
import hashlib

import grpc
import pytest
import yaml

from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving.pipeline import pages
from mmsearch.services.serving.pipeline.activation import LayoutError, activate
from mmsearch.services.serving.errors import StageError
from mmsearch.services.serving.config.experiments import parse_config
from mmsearch.services.serving.pipeline.routes import follow
from mmsearch.services.serving.pipeline.search import Searcher
from mmsearch.services.serving.config.settings import ServingSettings
from tests.support.fakes import collection_manifest, fake_backends, manifest
from tests.support.stack import t2t_config

Code = grpc.StatusCode
SCENE = "docs"
LAYOUT = {"fields": [{"name": "category", "type": "keyword"}, {"name": "size", "type": "number"}],
          "lexical": {"sources": ["question", "answer"], "analyzer": "english"}}
SETTINGS = ServingSettings(limits={"page_depth": 40})
Filter, Value = retrieval_pb2.Filter, retrieval_pb2.FilterValue


def config(fields=("category:keyword", "size:number")) -> dict:
    cfg = t2t_config(SCENE, model="m")
    scene = cfg["scenes"][SCENE]
    scene["fields"] = [dict(zip(("name", "type"), f.split(":"))) for f in fields]
    scene["defaults"]["match"]["candidates"] = 30
    scene["layers"].append({"name": "retrieval", "arms": [
        {"name": "dense", "weight": 1},
        {"name": "bm25", "weight": 0, "overrides": {"match": {"retriever": "bm25"}}},
        {"name": "hybrid", "weight": 0, "overrides": {"match": {"retriever": "hybrid", "fusion": {"name": "rrf"}}}},
        {"name": "weighted", "weight": 0, "overrides": {"match": {"retriever": "hybrid", "fusion": {
            "name": "weighted", "params": {"weights": {"dense": 0.5, "bm25": 0.5}}}}}},
    ]})
    return cfg


async def searcher(layout=LAYOUT, items: int = 60, fields=("category:keyword", "size:number")):
    b, calls = fake_backends(models={"m": manifest("m")}, items=items,
                             collections={SCENE: collection_manifest("m", "docs_1", layout=layout)})
    active = await activate(parse_config(yaml.safe_dump(config(fields))), b, timeout=1.0)
    return active, Searcher(b, SETTINGS, down={}), b, calls


def request(**fields) -> retrieval_pb2.SearchRequest:
    fields.setdefault("text", "read a csv file")
    return retrieval_pb2.SearchRequest(scene=SCENE, **fields)


async def failure(searcher_, active, req) -> StageError:
    with pytest.raises(StageError) as caught:
        await searcher_.search(req, active, deadline_s=2.0)
    return caught.value


async def test_filters_reach_every_retriever_as_one_expression():
    active, s, b, _ = await searcher()
    req = request(filters=[Filter(field="category", op=Filter.IN, values=[Value(text="c1"), Value(text='x"y')]),
                           Filter(field="size", op=Filter.RANGE, min=2)], force_arms={"retrieval": "hybrid"})
    response = await s.search(req, active, deadline_s=2.0)
    assert response.items
    expressions = {e for _, _, _, e in b.matcher.requests}
    assert expressions == {'(category in ["c1", "x\\"y"]) and (size >= 2.0)'}
    assert [r for r, _, _, _ in b.matcher.requests] == ["bm25", "dense"]  # BM25 needs no vector: sent first


async def test_a_bad_filter_is_invalid_argument_naming_the_field():
    active, s, _, calls = await searcher()
    error = await failure(s, active, request(filters=[Filter(field="colour", op=Filter.EQ, values=[Value(text="r")])]))
    assert error.code == Code.INVALID_ARGUMENT and "field 'colour'" in error.message
    error = await failure(s, active, request(facets=["size"]))
    assert error.code == Code.INVALID_ARGUMENT and "'size' is a number field" in error.message
    assert calls.log == []  # refused before any stage


async def test_facets_count_over_the_candidate_pool():
    active, s, _, _ = await searcher()
    response = await s.search(request(facets=["category"], top_k=5), active, deadline_s=2.0)
    [facet] = response.facets
    assert facet.field == "category" and facet.candidates == 30  # match.candidates, not the page
    assert [(c.value, c.count) for c in facet.counts] == [("c0", 10), ("c1", 10), ("c2", 10)]


@pytest.mark.parametrize("arm, diversify", [("dense", False), ("dense", True), ("hybrid", False), ("bm25", False)])
async def test_pages_are_disjoint_and_equal_one_long_page(arm, diversify):
    active, s, _, _ = await searcher()
    common = dict(force_arms={"retrieval": arm}, diversify=diversify)
    whole = await s.search(request(page_size=25, **common), active, deadline_s=2.0)
    seen, token = [], ""
    for page in range(5):
        response = await s.search(request(page_size=5, page_token=token, **common), active, deadline_s=2.0)
        assert response.offset == page * 5 and response.collection == "docs_1"
        seen += [i.id for i in response.items]
        token = response.next_page_token
    assert seen == [i.id for i in whole.items] and len(set(seen)) == 25


async def test_the_threshold_arm_pages_through_what_passes():
    active, s, _, _ = await searcher()
    common = dict(force_arms={"ranking": "threshold"})
    whole = await s.search(request(page_size=100, **common), active, deadline_s=2.0)
    assert not whole.next_page_token  # the last page: no token
    ids, token = [], ""
    while True:
        response = await s.search(request(page_size=7, page_token=token, **common), active, deadline_s=2.0)
        ids += [i.id for i in response.items]
        token = response.next_page_token
        if not token:
            break
    assert ids == [i.id for i in whole.items][:40]  # MMSEARCH_MAX_PAGE_DEPTH=40 ends the list


async def test_a_token_is_bound_to_its_query_and_index_version():
    active, s, b, _ = await searcher()
    first = await s.search(request(page_size=5), active, deadline_s=2.0)
    error = await failure(s, active, request(text="another query", page_token=first.next_page_token))
    assert error.code == Code.INVALID_ARGUMENT and "belongs to another search" in error.message
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_2", layout=LAYOUT)  # a publish
    moved = await follow(active, b)
    error = await failure(s, moved, request(page_size=5, page_token=first.next_page_token))
    assert error.code == Code.FAILED_PRECONDITION and "the index changed since the first page" in error.message
    error = await failure(s, active, request(page_token="not-a-token"))
    assert error.code == Code.INVALID_ARGUMENT and "not a token this service issued" in error.message


async def test_retrievers_decide_the_stages_and_items_say_who_found_them():
    active, s, _, calls = await searcher()
    bm25 = await s.search(request(force_arms={"retrieval": "bm25"}), active, deadline_s=2.0)
    assert [t.stage for t in bm25.timings] == ["match", "rank", "summary"]  # no preprocess, no embed
    assert [(f.retriever, f.rank) for f in bm25.items[0].found_by] == [("bm25", 1)]
    hybrid = await s.search(request(force_arms={"retrieval": "hybrid"}, top_k=30), active, deadline_s=2.0)
    assert [t.stage for t in hybrid.timings] == ["preprocess", "embed", "match", "rank", "summary"]
    both = [i for i in hybrid.items if len(i.found_by) == 2]
    assert both and {f.retriever for f in both[0].found_by} == {"dense", "bm25"}
    weighted = await s.search(request(force_arms={"retrieval": "weighted"}), active, deadline_s=2.0)
    assert weighted.items and 0 < weighted.items[0].retrieval_score <= 1


async def test_more_like_this_skips_the_encoder_and_excludes_the_item():
    active, s, b, calls = await searcher()
    response = await s.search(retrieval_pb2.SearchRequest(scene=SCENE, similar_to=1, top_k=10), active,
                              deadline_s=2.0)
    assert [t.stage for t in response.timings] == ["fetch", "match", "rank", "summary"]
    assert "embed" not in [stage for stage, _ in calls.log] and "preprocess" not in [st for st, _ in calls.log]
    assert 1 not in [i.id for i in response.items] and len(response.items) == 10
    error = await failure(s, active, retrieval_pb2.SearchRequest(scene=SCENE, similar_to=999))
    assert error.code == Code.NOT_FOUND and error.stage == "fetch" and "999" in error.message


async def test_activation_refuses_a_collection_without_the_declared_layout():
    with pytest.raises(LayoutError, match="has no field 'size'"):
        await searcher(layout={"fields": [{"name": "category", "type": "keyword"}]})
    with pytest.raises(LayoutError, match="holds it as keyword"):
        await searcher(layout={"fields": [{"name": "category", "type": "keyword"},
                                          {"name": "size", "type": "keyword"}], "lexical": LAYOUT["lexical"]})
    with pytest.raises(LayoutError, match="needs BM25 text but collection 'docs' has none"):
        await searcher(layout={"fields": LAYOUT["fields"]})


async def test_a_publish_to_a_version_without_the_fields_is_not_followed():
    active, _, b, _ = await searcher()
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_2", layout={})
    assert await follow(active, b) is None


async def test_a_hybrid_query_whose_embed_fails_stops_its_bm25_search():
    from mmsearch.services.serving.errors import Unavailable

    active, s, b, calls = await searcher()
    calls.fail["embed"] = Unavailable("the encoder is down")
    error = await failure(s, active, request(force_arms={"retrieval": "hybrid"}))
    assert error.code == Code.UNAVAILABLE and error.stage == "embed"
    calls.fail = {"match": Unavailable("milvus is down")}
    error = await failure(s, active, request(force_arms={"retrieval": "hybrid"}))
    assert error.code == Code.UNAVAILABLE and error.stage == "match" and "milvus is down" in error.message


async def test_without_a_configured_secret_no_other_process_can_mint_a_page_token():
    active, s, _, _ = await searcher()
    first = await s.search(request(page_size=5, diversify=True), active, deadline_s=2.0)
    assert (await s.search(request(page_size=5, diversify=True, page_token=first.next_page_token), active,
                           deadline_s=2.0)).items  # its own tokens continue
    other = Searcher(s.backends, ServingSettings(limits={"page_depth": 40}), down={})  # another replica, no secret
    error = await failure(other, active, request(page_size=5, diversify=True, page_token=first.next_page_token))
    assert error.code == Code.INVALID_ARGUMENT and "not a token this service issued" in error.message
    # The empty secret is not a key: a token signed with it is refused like any forgery.
    empty_secret_key = hashlib.sha256(b"mmsearch page token\x00").digest()
    forged = pages.encode(pages.decode(first.next_page_token, s.page_key), empty_secret_key)
    error = await failure(s, active, request(page_size=5, diversify=True, page_token=forged))
    assert error.code == Code.INVALID_ARGUMENT and "not a token this service issued" in error.message


def signed_like(s: Searcher, token: str, **changes) -> str:
    """``token`` with some values changed, signed with ``s``'s own key: what a forger with the key could send."""
    return pages.encode(dataclasses.replace(pages.decode(token, s.page_key), **changes), s.page_key)


@pytest.mark.parametrize("changes, words", [
    ({"pool": 16384}, "page_token carries a pool of 16384 candidates"),
    ({"pool": 1}, "page_token carries a pool of 1 candidates"),
    ({"offset": 10**9}, "page_token points past the deepest page"),
    ({"offset": 35}, "at offset 35, which this search never makes"),  # past the pool of 30
])
async def test_a_validly_signed_token_out_of_bounds_is_refused_before_any_store(changes, words):
    active, s, b, calls = await searcher()
    first = await s.search(request(page_size=5, diversify=True), active, deadline_s=2.0)
    sent = list(b.matcher.requests)
    error = await failure(s, active, request(page_size=5, diversify=True,
                                             page_token=signed_like(s, first.next_page_token, **changes)))
    assert error.code == Code.INVALID_ARGUMENT and error.stage == "request" and words in error.message
    assert error.message.startswith("page_token ") and "server" not in error.message
    assert b.matcher.requests == sent  # nothing reached the index


async def test_a_token_sent_with_another_user_says_send_the_same_user():
    active, s, _, _ = await searcher()
    first = await s.search(request(page_size=5, user_id="alice"), active, deadline_s=2.0)
    for user in ("bob", ""):
        error = await failure(s, active, request(page_size=5, user_id=user, page_token=first.next_page_token))
        assert error.code == Code.INVALID_ARGUMENT and "send the same user" in error.message
        assert "experiment changed" not in error.message


async def test_an_over_long_user_id_and_a_nul_only_text_are_invalid_argument():
    active, s, _, calls = await searcher()
    limit = SETTINGS.limits.user_id_chars
    assert (await s.search(request(user_id="u" * limit), active, deadline_s=2.0)).items
    error = await failure(s, active, request(user_id="u" * (1 << 20)))
    assert error.code == Code.INVALID_ARGUMENT and f"user_id has {1 << 20} characters; at most {limit}" in error.message
    for text in ("\x00", "\x00" * 50, " \x00 \x00 "):
        error = await failure(s, active, request(text=text))
        assert error.code == Code.INVALID_ARGUMENT and error.message.startswith("text is empty")
