"""What an arm may choose by name: its ranker and its hybrid fusion, each with a validator of its parameters.

The names and their parameters are configuration: the experiment config is
checked against them when it loads (:mod:`mmsearch.services.serving.config.experiments`).
The functions they name live in the pipeline (:data:`~mmsearch.services.serving.pipeline.rankers.RANKERS`,
:data:`~mmsearch.services.serving.pipeline.fusion.FUSIONS`); a test keeps the two tables in step.
Every validator is pure: it returns the parameters with their defaults filled in, or raises
``ValueError`` naming the parameter, the value and what is allowed.
"""
from __future__ import annotations

from typing import Any, Callable, Mapping

Validator = Callable[[Mapping[str, Any]], dict[str, Any]]


def _no_params(name: str) -> Validator:
    def check(params: Mapping[str, Any]) -> dict[str, Any]:
        if params:
            raise ValueError(f"ranker {name!r} takes no parameters (got {sorted(params)})")
        return {}

    return check


def _number(value: Any) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float))


def _threshold_params(params: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(params) - {"min_score"}
    if extra or "min_score" not in params:
        raise ValueError(f"ranker 'score_threshold' takes exactly min_score (a number); got {sorted(params)}")
    value = params["min_score"]
    if not _number(value):
        raise ValueError(f"score_threshold.min_score must be a number, got {value!r}")
    return {"min_score": float(value)}


def _mmr_params(params: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(params) - {"lambda"}
    if extra:
        raise ValueError(f"ranker 'mmr' takes only lambda; got unknown {sorted(extra)}")
    value = params.get("lambda", 0.7)
    if not _number(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"mmr.lambda must be a number in [0, 1], got {value!r}")
    return {"lambda": float(value)}


def _rrf_params(params: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(params) - {"k"}
    if extra:
        raise ValueError(f"fusion 'rrf' takes only k; got unknown {sorted(extra)}")
    k = params.get("k", 60)
    if not _number(k) or not 0 < k < 16384:
        raise ValueError(f"rrf.k must be a number in (0, 16384), got {k!r}")
    return {"k": float(k)}


def _weighted_params(params: Mapping[str, Any]) -> dict[str, Any]:
    extra = set(params) - {"weights", "norm"}
    if extra:
        raise ValueError(f"fusion 'weighted' takes weights and norm; got unknown {sorted(extra)}")
    weights = params.get("weights")
    if not isinstance(weights, Mapping) or set(weights) != {"dense", "bm25"}:
        raise ValueError(f"weighted.weights must map dense and bm25 to numbers in [0, 1], got {weights!r}")
    for name, w in weights.items():
        if not _number(w) or not 0.0 <= w <= 1.0:
            raise ValueError(f"weighted.weights.{name} must be a number in [0, 1], got {w!r}")
    norm = params.get("norm", "atan")
    if norm not in ("atan", "minmax"):
        raise ValueError(f"weighted.norm must be atan or minmax, got {norm!r}")
    return {"weights": {k: float(v) for k, v in weights.items()}, "norm": norm}


RANKERS: dict[str, Validator] = {
    "score_order": _no_params("score_order"),
    "score_threshold": _threshold_params,
    "mmr": _mmr_params,
}
"""Ranker name -> its parameters' validator."""

FUSIONS: dict[str, Validator] = {"rrf": _rrf_params, "weighted": _weighted_params}
"""Fusion name -> its parameters' validator."""


def checked(kind: str, table: Mapping[str, Validator], name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of the ``kind`` ("ranker" | "fusion") called ``name``, validated; ``ValueError`` naming an
    unknown name with the known ones. Pure."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)}")
    return table[name](params)
