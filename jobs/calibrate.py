"""A score cutoff calibrated on a labelled query set: the lowest score that keeps a target precision (pure).

``mmsearch job evaluate --calibrate-precision P`` judges every result of
every labelled query (the top ``max(k, 10)`` of each, as evaluate fetches
them): relevant when it is one of the query's labelled answers. Over all
those (score, relevant) pairs, the precision at a score ``t`` is the share of
relevant pairs among those scoring ``t`` or more; the cutoff is the lowest
``t`` (one of the scores seen) whose precision is at least ``P``. Serving's
``score_threshold`` ranker with ``min_score: auto`` keeps what scores at or
above it on the version that recorded it.

Decisions:
- Reproducible: a function of the pairs alone (their order does not
  matter; tied scores are kept or cut together).
- Monotone: a higher target never gives a lower cutoff (the scores meeting
  a higher target are a subset of those meeting a lower one).
- No score reaching the target (or no pairs): the cutoff is recorded with
  ``score: null``; serving refuses ``auto`` on such a version.
- Only similarities (IP, COSINE): for L2, smaller is better and serving's
  threshold keeps larger scores, so calibration is refused.
- Precision is against the labels: a labelled set with one answer per query
  cannot show a precision above 1/10 at depth 10 unless the cutoff cuts
  deep; choose the target with the set's labels in mind.
"""
from __future__ import annotations

from typing import Any, Iterable, Sequence

SIMILARITIES = ("IP", "COSINE")


def judged(scores: Sequence[float], ids: Sequence[int], relevant: Iterable[int]) -> list[tuple[float, bool]]:
    """(score, relevant) of one query's results. Pure."""
    wanted = set(relevant)
    return [(float(s), int(i) in wanted) for s, i in zip(scores, ids)]


def calibrate(pairs: Sequence[tuple[float, bool]], precision: float) -> dict[str, Any]:
    """The lowest score whose precision (relevant share of the pairs scoring at least it) is at least
    ``precision``, with what it keeps: ``{precision, score (None: unreachable), kept, relevant,
    achieved, judged}``. Pure."""
    if not 0.0 < precision <= 1.0:
        raise ValueError(f"the target precision must be in (0, 1], got {precision!r}")
    ordered = sorted(pairs, key=lambda p: -p[0])
    best: dict[str, Any] = {"score": None, "kept": 0, "relevant": 0, "achieved": None}
    kept = hits = 0
    for i, (score, relevant) in enumerate(ordered):
        kept += 1
        hits += bool(relevant)
        if i + 1 < len(ordered) and ordered[i + 1][0] == score:
            continue  # tied scores are kept or cut together
        if hits / kept >= precision:
            best = {"score": score, "kept": kept, "relevant": hits, "achieved": hits / kept}
    return {"precision": precision, **best, "judged": len(ordered)}
