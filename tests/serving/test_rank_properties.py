"""Every ranker and every fusion over empty, single, tied and duplicate candidate lists (hypothesis): no
exception, an answer that picks distinct positions of the input, the same answer every time. And the
search answer they start from: an empty one (no hit) is an empty list, with or without vectors."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from mmsearch.core.milvus.search import matches
from mmsearch.services.serving.backends.matcher import Matches
from mmsearch.services.serving.config.choices import FUSIONS as FUSION_PARAMS, RANKERS as RANKER_PARAMS
from mmsearch.services.serving.pipeline.fusion import FUSIONS, fuse, single
from mmsearch.services.serving.pipeline.rankers import RANKERS, Candidates

DIM = 4
scores = st.sampled_from([0.0, 0.5, 0.5, 1.0, -0.25])  # few values: ties are common
vectors = st.lists(st.sampled_from([0.0, 1.0, -1.0, 0.5]), min_size=DIM, max_size=DIM)


@st.composite
def candidate_lists(draw, max_size: int = 12):
    """(ids, scores, vectors): empty, single, tied (equal scores) and duplicate (equal ids and vectors) lists."""
    n = draw(st.integers(0, max_size))
    ids = draw(st.lists(st.integers(0, 5), min_size=n, max_size=n))  # ids 0..5: duplicates are common
    return (np.asarray(ids, np.int64), np.asarray(draw(st.lists(scores, min_size=n, max_size=n)), np.float32),
            np.asarray(draw(st.lists(vectors, min_size=n, max_size=n)), np.float32).reshape(n, DIM))


RANKER_CASES = [("score_order", {}), ("score_threshold", {"min_score": 0.5}), ("mmr", {"lambda": 0.0}),
                ("mmr", {"lambda": 0.5}), ("mmr", {"lambda": 1.0})]


def test_the_cases_cover_every_ranker_and_fusion():
    assert {name for name, _ in RANKER_CASES} == set(RANKERS) == set(RANKER_PARAMS)
    assert set(FUSION_CASES) == set(FUSIONS) == set(FUSION_PARAMS)


@pytest.mark.parametrize("name, params", RANKER_CASES)
@settings(max_examples=150, deadline=None)
@given(lists=candidate_lists(), k=st.integers(0, 15), query=vectors)
def test_every_ranker_answers_distinct_input_positions_deterministically(name, params, lists, k, query):
    ids, found, vecs = lists
    candidates = Candidates(ids, found, vecs, np.asarray(query, np.float32))
    ranked = RANKERS[name].fn(candidates, k, params)
    positions = [p for p, _ in ranked]
    assert len(positions) == len(set(positions)) <= min(k, len(ids))
    assert all(isinstance(p, int) and 0 <= p < len(ids) for p in positions)
    assert all(np.isfinite(score) for _, score in ranked)
    assert RANKERS[name].fn(candidates, k, params) == ranked
    if name != "score_threshold":  # the others fill the page when they can
        assert len(ranked) == min(k, len(ids))


@pytest.mark.parametrize("name", sorted(RANKERS))
def test_no_candidate_ranks_to_no_item(name):
    params = dict(RANKER_CASES)[name]
    empty = matches([[]], with_vectors=True)[0]
    assert RANKERS[name].fn(Candidates(empty.ids, empty.scores, empty.vectors, np.ones(DIM, np.float32)), 10,
                            params) == []


def test_a_search_answer_without_hits_is_an_empty_list_with_or_without_vectors():
    for with_vectors in (True, False):
        [empty] = matches([[]], with_vectors=with_vectors, output_fields=("category",))
        assert len(empty) == 0 and empty.fields == {"category": []}
        assert (empty.vectors is None) != with_vectors
    hit = {"id": 3, "distance": 0.5, "entity": {"vector": [1.0, 0.0], "category": "csv"}}
    [one] = matches([[hit]], with_vectors=True)
    assert one.vectors.shape == (1, 2)


def as_matches(lists, with_vectors: bool) -> Matches:
    ids, found, vecs = lists
    return Matches(ids, found, vecs if with_vectors else None, {"category": [f"c{i}" for i in ids.tolist()]})


FUSION_CASES = {"rrf": {"k": 60}, "weighted": {"weights": {"dense": 0.5, "bm25": 0.5}, "norm": "atan"}}


@pytest.mark.parametrize("fusion", sorted(FUSION_CASES))
@pytest.mark.parametrize("norm", ["atan", "minmax"])
@settings(max_examples=150, deadline=None)
@given(dense=candidate_lists(), bm25=candidate_lists(), limit=st.integers(0, 30), with_vectors=st.booleans())
def test_every_fusion_answers_distinct_input_ids_deterministically(fusion, norm, dense, bm25, limit, with_vectors):
    params = {**FUSION_CASES[fusion], **({"norm": norm} if fusion == "weighted" else {})}
    lists = [("dense", "IP", as_matches(dense, with_vectors)), ("bm25", "BM25", as_matches(bm25, with_vectors))]
    fused = fuse(lists, fusion, params, limit)
    ids = fused.ids.tolist()
    assert len(ids) == len(set(ids)) <= limit
    assert set(ids) <= set(dense[0].tolist()) | set(bm25[0].tolist())
    assert len(ids) == min(limit, len(set(dense[0].tolist()) | set(bm25[0].tolist())))
    assert np.all(np.isfinite(fused.scores)) and len(fused.found_by) == len(ids) == len(fused.fields["category"])
    assert (fused.vectors is not None and len(fused.vectors) == len(ids)) if with_vectors and ids else True
    again = fuse(lists, fusion, params, limit)
    assert again.ids.tolist() == ids and again.scores.tolist() == fused.scores.tolist()


@settings(max_examples=150, deadline=None)
@given(lists=candidate_lists(), with_vectors=st.booleans())
def test_one_retrievers_list_is_a_permutation_of_its_input(lists, with_vectors):
    ordered = single("dense", as_matches(lists, with_vectors))
    assert sorted(ordered.ids.tolist()) == sorted(lists[0].tolist())
    assert [rank for ((_, rank, _),) in ordered.found_by] == list(range(1, len(lists[0]) + 1))
    assert single("dense", as_matches(lists, with_vectors)).ids.tolist() == ordered.ids.tolist()
