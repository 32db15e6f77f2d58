"""Rankers: pure functions chosen by name, their parameters checked by the config's table."""
import numpy as np
import pytest

from mmsearch.services.serving.config import choices
from mmsearch.services.serving.pipeline import fusion, rankers
from mmsearch.services.serving.pipeline.rankers import Candidates


def _cands(scores, vectors=None):
    return Candidates(np.arange(len(scores), dtype=np.int64) + 100, np.asarray(scores, dtype=np.float32),
                      None if vectors is None else np.asarray(vectors, dtype=np.float32))


def test_score_order_sorts_and_cuts():
    ranked = rankers.RANKERS["score_order"].fn(_cands([0.1, 0.9, 0.5]), 2, {})
    assert [i for i, _ in ranked] == [1, 2]
    assert ranked[0][1] == pytest.approx(0.9)


def test_threshold_drops_low_scores():
    r, check = rankers.RANKERS["score_threshold"], choices.RANKERS["score_threshold"]
    params = check({"min_score": 0.4})
    assert [i for i, _ in r.fn(_cands([0.1, 0.9, 0.5]), 10, params)] == [1, 2]
    with pytest.raises(ValueError, match="min_score"):
        check({})
    with pytest.raises(ValueError, match="must be a number"):
        check({"min_score": "high"})


def test_mmr_prefers_diverse_candidates():
    # 0 and 1 are near-duplicates; 2 is different and a bit less relevant.
    v = np.array([[1, 0, 0], [0.999, 0.0447, 0], [0, 1, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    c = _cands([0.9, 0.89, 0.7], v)
    mmr, check = rankers.RANKERS["mmr"], choices.RANKERS["mmr"]
    assert mmr.needs_vectors and mmr.needs_pool
    assert [i for i, _ in mmr.fn(c, 2, check({"lambda": 0.5}))] == [0, 2]
    # lambda = 1 is pure relevance: the score order
    assert [i for i, _ in mmr.fn(c, 3, check({"lambda": 1.0}))] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        check({"lambda": 2})


def test_unknown_ranker_names_the_known_ones():
    with pytest.raises(ValueError, match="score_order"):
        choices.checked("ranker", choices.RANKERS, "magic", {})


def test_the_config_names_exactly_the_functions_the_pipeline_has():
    assert set(choices.RANKERS) == set(rankers.RANKERS)
    assert set(choices.FUSIONS) == set(fusion.FUSIONS)
