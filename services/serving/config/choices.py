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


def _one_number(kind: str, name: str, key: str, *, default: float | None = None,
                inside: Callable[[float], bool] = lambda value: True, bounds: str = "") -> Validator:
    """The validator of a choice that takes one number ``key``: required when it has no ``default``,
    refused unless ``inside`` (``bounds`` says the range in the message)."""
    def check(params: Mapping[str, Any]) -> dict[str, Any]:
        if set(params) - {key} or (default is None and key not in params):
            wanted = "exactly" if default is None else "only"
            raise ValueError(f"{kind} {name!r} takes {wanted} {key} (a number); got {sorted(params)}")
        value = params.get(key, default)
        if not _number(value) or not inside(value):
            raise ValueError(f"{name}.{key} must be a number{bounds}, got {value!r}")
        return {key: float(value)}

    return check


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


AUTO = "auto"
"""``min_score: auto``: the calibrated cutoff the served index version recorded (``evaluate --calibrate-precision``)."""


def _threshold_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """score_threshold's ``min_score``: a number, or ``auto`` (resolved per index version when a search runs)."""
    if params.get("min_score") == AUTO and set(params) == {"min_score"}:
        return {"min_score": AUTO}
    try:
        return _one_number("ranker", "score_threshold", "min_score")(params)
    except ValueError as exc:
        raise ValueError(f"{exc} (or auto: the index version's calibrated cutoff)") from None


RANKERS: dict[str, Validator] = {
    "score_order": _no_params("score_order"),
    "score_threshold": _threshold_params,
    "mmr": _one_number("ranker", "mmr", "lambda", default=0.7, inside=lambda v: 0.0 <= v <= 1.0, bounds=" in [0, 1]"),
}
"""Ranker name -> its parameters' validator."""

FUSIONS: dict[str, Validator] = {
    "rrf": _one_number("fusion", "rrf", "k", default=60, inside=lambda k: 0 < k < 16384, bounds=" in (0, 16384)"),
    "weighted": _weighted_params,
}
"""Fusion name -> its parameters' validator."""


def checked(kind: str, table: Mapping[str, Validator], name: str, params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` of the ``kind`` ("ranker" | "fusion") called ``name``, validated; ``ValueError`` naming an
    unknown name with the known ones. Pure."""
    if name not in table:
        raise ValueError(f"unknown {kind} {name!r}; known: {sorted(table)}")
    return table[name](params)
