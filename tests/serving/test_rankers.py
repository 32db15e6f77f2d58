"""Rankers: pure functions registered by name."""
import numpy as np
import pytest

from services.serving import rankers
from services.serving.rankers import Candidates


def _cands(scores, vectors=None):
    return Candidates(np.arange(len(scores), dtype=np.int64) + 100, np.asarray(scores, dtype=np.float32),
                      None if vectors is None else np.asarray(vectors, dtype=np.float32))


def test_score_order_sorts_and_cuts():
    ranked = rankers.get("score_order").fn(_cands([0.1, 0.9, 0.5]), 2, {})
    assert [i for i, _ in ranked] == [1, 2]
    assert ranked[0][1] == pytest.approx(0.9)


def test_threshold_drops_low_scores():
    r = rankers.get("score_threshold")
    params = r.params({"min_score": 0.4})
    assert [i for i, _ in r.fn(_cands([0.1, 0.9, 0.5]), 10, params)] == [1, 2]
    with pytest.raises(ValueError, match="min_score"):
        r.params({})
    with pytest.raises(ValueError, match="must be a number"):
        r.params({"min_score": "high"})


def test_mmr_prefers_diverse_candidates():
    # 0 and 1 are near-duplicates; 2 is different and a bit less relevant.
    v = np.array([[1, 0, 0], [0.999, 0.0447, 0], [0, 1, 0]], dtype=np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    c = _cands([0.9, 0.89, 0.7], v)
    mmr = rankers.get("mmr")
    assert mmr.needs_vectors and mmr.needs_pool
    assert [i for i, _ in mmr.fn(c, 2, mmr.params({"lambda": 0.5}))] == [0, 2]
    # lambda = 1 is pure relevance: the score order
    assert [i for i, _ in mmr.fn(c, 3, mmr.params({"lambda": 1.0}))] == [0, 1, 2]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        mmr.params({"lambda": 2})


def test_unknown_ranker_names_registered_ones():
    with pytest.raises(KeyError, match="score_order"):
        rankers.get("magic")
