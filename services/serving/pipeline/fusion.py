"""The match stage's retrievers and how their lists are fused (pure functions, chosen by name).

An arm's ``match.retriever`` is ``dense`` (vector similarity), ``bm25``
(Milvus's built-in full-text BM25 on the collection's text field) or
``hybrid`` (both, fused). Image and more-like-this queries have no text, so
they always run dense alone. :func:`single` orders one retriever's list;
:func:`fuse` merges several with a fusion of :data:`FUSIONS`:

- ``rrf`` (params ``k``, default 60): reciprocal rank fusion,
  ``score = sum over retrievers of 1 / (k + rank)`` with 1-based ranks;
  the same formula as Milvus's ``RRFRanker`` (checked against Milvus Lite's
  ``hybrid_search`` in the tests).
- ``weighted`` (params ``weights: {dense: w, bm25: w}``, ``norm``):
  ``score = sum of w * norm(score)``. ``norm: atan`` (default) is Milvus's
  ``WeightedRanker`` normalisation: ``0.5 + atan(s)/pi`` for IP,
  ``(1 + s)/2`` for COSINE, ``1 - 2 atan(d)/pi`` for L2 and ``2 atan(s)/pi``
  for BM25; ``norm: minmax`` rescales each list to [0, 1] by its own best
  and worst score (a list of one hit, or of equal scores, is all best: 1,
  so the only BM25 match of a query counts in full).

Why serving fuses instead of calling Milvus's ``hybrid_search``: the items
must say which retriever found them (and at which rank), which
``hybrid_search`` does not return; and Milvus Lite 2.5.1's ``WeightedRanker``
normalises BM25 as if it were a distance (the best BM25 match gets the lowest
share: measured), so the embedded default and a Milvus server would rank
differently. The two searches run concurrently.

The fused score is the candidates' retrieval score, which MMR takes as its
relevance: RRF scores are about 1/60, so MMR over an RRF list is driven by
redundancy alone; pair MMR with weighted fusion (scores in [0, 1]).

Every list is ordered by score, then id: the order of exact ties (duplicate
documents, equal RRF sums) is the same in every call, which keeps pages
disjoint.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from mmsearch.services.serving.backends.matcher import Found, Matches

RETRIEVERS: dict[str, tuple[str, ...]] = {"dense": ("dense",), "bm25": ("bm25",), "hybrid": ("dense", "bm25")}


def ordered(matches: Matches) -> Matches:
    """``matches`` by score (best first), then id. Pure."""
    order = np.lexsort((matches.ids, -matches.scores.astype(np.float64)))
    return matches.take(order)


def single(name: str, matches: Matches) -> Matches:
    """One retriever's list, ordered, each hit marked as found by ``name`` at its rank. Pure."""
    out = ordered(matches)
    found = tuple(((name, rank, float(score)),) for rank, score in enumerate(out.scores.tolist(), start=1))
    return Matches(out.ids, out.scores, out.vectors, out.fields, found)


def rrf(ranks: dict[int, dict[str, tuple[int, float]]], metrics: Mapping[str, str],
        params: Mapping[str, Any]) -> dict[int, float]:
    k = params["k"]
    return {i: sum(1.0 / (k + rank) for rank, _ in by.values()) for i, by in ranks.items()}


NORMS: dict[str, Callable[[float], float]] = {
    "IP": lambda s: 0.5 + math.atan(s) / math.pi,
    "COSINE": lambda s: (1.0 + s) / 2.0,
    "L2": lambda d: 1.0 - 2.0 * math.atan(d) / math.pi,
    "BM25": lambda s: 2.0 * math.atan(s) / math.pi,
}


def weighted(ranks: dict[int, dict[str, tuple[int, float]]], metrics: Mapping[str, str],
             params: Mapping[str, Any]) -> dict[int, float]:
    norms: dict[str, Callable[[float], float]] = {}
    for name, metric in metrics.items():
        if params["norm"] == "atan":
            norms[name] = NORMS[metric]
        else:
            scores = [by[name][1] for by in ranks.values() if name in by]
            low, high = (min(scores), max(scores)) if scores else (0.0, 1.0)
            best_high = metric != "L2"
            span = high - low
            if span == 0:  # one hit, or all tied: each is the list's best, not its worst
                norms[name] = lambda s: 1.0
            else:
                norms[name] = (lambda s, lo=low, sp=span: (s - lo) / sp) if best_high else \
                    (lambda d, hi=high, sp=span: (hi - d) / sp)
    w = params["weights"]
    return {i: sum(w[name] * norms[name](score) for name, (_, score) in by.items()) for i, by in ranks.items()}


Fuser = Callable[[dict[int, dict[str, tuple[int, float]]], Mapping[str, str], Mapping[str, Any]], dict[int, float]]
FUSIONS: dict[str, Fuser] = {"rrf": rrf, "weighted": weighted}
"""Fusion name -> (per-retriever (rank, score) of each id, {retriever: metric}, params) -> fused score per id;
the names and their parameters are configuration (:data:`mmsearch.services.serving.config.choices.FUSIONS`)."""


def fuse(lists: Sequence[tuple[str, str, Matches]], fusion: str, params: Mapping[str, Any], limit: int) -> Matches:
    """The fused list of ``(retriever, metric, matches)`` lists: the ``limit`` best by fused score, then id,
    each hit with what every retriever said of it; vectors and field values from whichever list held it. Pure."""
    ranks: dict[int, dict[str, tuple[int, float]]] = {}
    where: dict[int, tuple[Matches, int]] = {}
    for name, _, matches in lists:
        mine = ordered(matches)
        for position, (i, score) in enumerate(zip(mine.ids.tolist(), mine.scores.tolist())):
            ranks.setdefault(i, {})[name] = (position + 1, float(score))
            where.setdefault(i, (mine, position))
    scores = FUSIONS[fusion](ranks, {name: metric for name, metric, _ in lists}, params)
    best = sorted(scores, key=lambda i: (-scores[i], i))[:limit]
    ids = np.asarray(best, dtype=np.int64)
    fused = np.asarray([scores[i] for i in best], dtype=np.float32)
    vectors = None
    if best and all(m.vectors is not None for _, _, m in lists):
        vectors = np.stack([where[i][0].vectors[where[i][1]] for i in best]).astype(np.float32)
    names = set().union(*(m.fields for _, _, m in lists)) if lists else set()
    fields = {n: [where[i][0].fields.get(n, [None] * len(where[i][0]))[where[i][1]] for i in best] for n in names}
    order = [name for name, _, _ in lists]
    found: tuple[Found, ...] = tuple(
        tuple((name, *ranks[i][name]) for name in order if name in ranks[i]) for i in best)
    return Matches(ids, fused, vectors, fields, found)
