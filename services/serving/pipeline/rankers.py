"""Rankers: small pure functions, chosen by name.

A ranker takes the matcher's candidates (ids, retrieval scores, optionally
their vectors and the query vector), a page size ``k`` and its parameters, and
returns the chosen candidates' positions with their ranking scores, best
first. ``needs_vectors`` tells the matcher to return the candidates' vectors;
``needs_pool`` tells it to fetch the arm's ``candidates`` (a pool larger than
``k``) instead of just ``k``.

The rankers: ``score_order`` (the matcher's order), ``score_threshold``
(drops candidates under ``min_score``), ``mmr`` (maximal marginal relevance on
the candidates' vectors; ``lambda`` in [0, 1], 1 = pure relevance).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping

import numpy as np


@dataclass(frozen=True)
class Candidates:
    ids: np.ndarray                    # int64 [n], best first
    scores: np.ndarray                 # float32 [n], the matcher's similarity
    vectors: np.ndarray | None = None  # float32 [n, d] when the ranker needs them
    query: np.ndarray | None = None    # float32 [d]


Ranked = list[tuple[int, float]]
"""(position in the candidates, ranking score), best first."""


@dataclass(frozen=True)
class Ranker:
    fn: Callable[[Candidates, int, Mapping[str, Any]], Ranked]
    needs_vectors: bool = False
    needs_pool: bool = False


def score_order(c: Candidates, k: int, params: Mapping[str, Any]) -> Ranked:
    """The matcher's similarity order; ranking score = retrieval score."""
    order = np.argsort(-c.scores, kind="stable")[:k]
    return [(int(i), float(c.scores[i])) for i in order]


def score_threshold(c: Candidates, k: int, params: Mapping[str, Any]) -> Ranked:
    """Score order, keeping only candidates whose retrieval score is >= ``min_score``."""
    return [(i, s) for i, s in score_order(c, len(c.ids), {}) if s >= params["min_score"]][:k]


def mmr(c: Candidates, k: int, params: Mapping[str, Any]) -> Ranked:
    """Maximal marginal relevance: greedily pick argmax λ·rel(d) − (1−λ)·max_{s∈picked} sim(d, s).

    rel(d) is the matcher's score (inner product with the query); sim is the
    inner product of candidate vectors (cosine for the normalised embeddings
    our exports produce). The ranking score is the MMR objective at pick time.
    """
    n = len(c.ids)
    if n == 0 or k <= 0:
        return []
    if c.vectors is None:
        raise ValueError("mmr needs the candidates' vectors")
    lam = params["lambda"]
    vectors = np.asarray(c.vectors, dtype=np.float32)
    sims = vectors @ vectors.T
    relevance = np.asarray(c.scores, dtype=np.float32)
    redundancy = np.full(n, -np.inf, dtype=np.float32)
    chosen = np.zeros(n, dtype=bool)
    out: Ranked = []
    for _ in range(min(k, n)):
        penalty = np.where(np.isfinite(redundancy), redundancy, 0.0)
        objective = lam * relevance - (1.0 - lam) * penalty
        objective[chosen] = -np.inf
        best = int(np.argmax(objective))
        out.append((best, float(objective[best])))
        chosen[best] = True
        redundancy = np.maximum(redundancy, sims[best])
    return out


RANKERS: dict[str, Ranker] = {
    "score_order": Ranker(score_order),
    "score_threshold": Ranker(score_threshold),
    "mmr": Ranker(mmr, needs_vectors=True, needs_pool=True),
}
"""Ranker name -> its function; the names and their parameters are configuration
(:data:`mmsearch.services.serving.config.choices.RANKERS`)."""
