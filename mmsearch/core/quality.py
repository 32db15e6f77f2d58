"""The quality gate: an evaluation's figures against the thresholds a publish requires.

``mmsearch job evaluate`` summarises a collection's run over a labelled query
set as a small JSON object (:data:`SUMMARY_KEYS`): ``collection``,
``queries``, ``k``, ``recall`` (mean recall@k), ``mrr``, ``ndcg10``,
``zero_hit`` (share of queries with no relevant document in the top k),
``p50_ms``/``p99_ms`` (per-query latency, encode + search), and, when it
compared against another collection (the published one), ``compare``
(that collection's name and figures) and ``regression`` = its recall@k
minus the candidate's (positive: the candidate is worse); ``unresolved``: how
many labels named no document of the corpus (a run with any is not judged).

:func:`shortfalls` is the one gate: ``publish`` applies it to the report it
is given and the operator to the evaluate Job's summary, so both refuse the
same candidates with the same message (the metric, its value, the threshold).
Pure.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping

SUMMARY_KEYS = ("collection", "queries", "k", "recall", "mrr", "ndcg10", "zero_hit", "p50_ms", "p99_ms",
                "compare", "regression", "worse", "unresolved")
CLI_NAMES = {"min_recall": "--min-recall", "max_regression": "--max-regression", "max_p99_ms": "--max-p99-ms"}


@dataclass(frozen=True)
class Thresholds:
    """What a candidate must reach; None: no bar on that metric."""

    min_recall: float | None = None
    max_regression: float | None = None
    max_p99_ms: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in (self.min_recall, self.max_regression, self.max_p99_ms))

    def invalid(self, names: Mapping[str, str] = CLI_NAMES) -> list[str]:
        """One message per threshold that is no bar at all: not a finite number (NaN compares false, so a
        NaN bar passes everything), or outside its range (a recall or regression in [0, 1], p99 above 0)."""
        out = []
        for key, value, low, high, wanted in (
                ("min_recall", self.min_recall, 0.0, 1.0, "a recall from 0 to 1"),
                ("max_regression", self.max_regression, 0.0, 1.0, "a recall difference from 0 to 1"),
                ("max_p99_ms", self.max_p99_ms, 0.0, math.inf, "milliseconds above 0")):
            if value is None:
                continue
            number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan
            if not math.isfinite(number) or not low <= number <= high or (key == "max_p99_ms" and number <= 0):
                out.append(f"{names[key]} {value!r}: give {wanted}")
        return out

    def to_dict(self) -> dict[str, float]:
        return {k: v for k, v in (("min_recall", self.min_recall), ("max_regression", self.max_regression),
                                  ("max_p99_ms", self.max_p99_ms)) if v is not None}


def shortfalls(summary: Mapping[str, Any], thresholds: Thresholds, *, published: str | None = None,
               names: Mapping[str, str] = CLI_NAMES) -> list[str]:
    """One message per threshold the evaluation ``summary`` misses (empty: it passes).

    ``published`` is the collection live now: a regression bar needs the summary to have been
    compared against exactly that one (nothing published: no regression to measure). ``names``
    says how each threshold is called where it was set (flags, or the IndexJob's fields).
    """
    out = []
    k = summary.get("k", "k")
    if thresholds.any() and summary.get("unresolved"):
        out.append(f"the evaluation counted {summary['unresolved']} labels that name no document of the corpus "
                   "as misses, so its figures are no measurement: fix the query set and evaluate again")
    if thresholds.min_recall is not None and float(summary["recall"]) < thresholds.min_recall:
        out.append(f"recall@{k} {float(summary['recall']):.4f} < {names['min_recall']} {thresholds.min_recall:g}")
    if thresholds.max_regression is not None and published:
        compared = (summary.get("compare") or {}).get("collection")
        if compared != published:
            out.append(f"{names['max_regression']} {thresholds.max_regression:g} needs an evaluation compared "
                       f"against the published collection {published}, this one compared against "
                       f"{compared or 'nothing'} (run evaluate with --compare)")
        elif float(summary["regression"]) > thresholds.max_regression:
            out.append(f"recall@{k} regression {float(summary['regression']):.4f} against {published} "
                       f"({float(summary['compare']['recall']):.4f} -> {float(summary['recall']):.4f}) > "
                       f"{names['max_regression']} {thresholds.max_regression:g}")
    if thresholds.max_p99_ms is not None and float(summary["p99_ms"]) > thresholds.max_p99_ms:
        out.append(f"p99 {float(summary['p99_ms']):.1f} ms > {names['max_p99_ms']} {thresholds.max_p99_ms:g}")
    return out
