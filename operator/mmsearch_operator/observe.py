"""What the operator reads back from the cluster: a Job's outcome, and the summary a stage's pod left in its
termination message (evaluate's figures, publish's and rollback's outcome). Pure functions."""
from __future__ import annotations

import dataclasses
import json
from datetime import datetime, timezone
from typing import Any, Iterable

from mmsearch.operator.conditions import FAILED, RUNNING, SUCCEEDED


@dataclasses.dataclass(frozen=True)
class JobView:
    """What a stage needs to know about its Job."""
    state: str  # Running | Succeeded | Failed
    done: int
    total: int
    retries: int
    reason: str = ""
    message: str = ""
    completion_time: str | None = None


def timestamp(now: datetime) -> str:
    return now.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def count_indexes(ranges: str) -> int:
    """Number of indexes in a Job's ``completedIndexes`` (``"0-2,5"`` -> 4)."""
    total = 0
    for part in filter(None, (ranges or "").split(",")):
        lo, _, hi = part.partition("-")
        total += int(hi or lo) - int(lo) + 1
    return total


def observe_job(job: dict[str, Any]) -> JobView:
    """A Job's outcome from its status (conditions Complete/Failed, counts, completed indexes)."""
    spec, st = job.get("spec") or {}, job.get("status") or {}
    total = int(spec.get("completions") or 1)
    if "completedIndexes" in st:
        done = count_indexes(st["completedIndexes"])
    else:
        done = int(st.get("succeeded") or 0)
    retries = int(st.get("failed") or 0)
    conditions = {c.get("type"): c for c in st.get("conditions") or [] if c.get("status") == "True"}
    if "Complete" in conditions:
        return JobView(SUCCEEDED, total, total, retries, completion_time=st.get("completionTime"))
    if "Failed" in conditions:
        c = conditions["Failed"]
        return JobView(FAILED, min(done, total), total, retries, c.get("reason") or "Failed",
                       c.get("message") or "", c.get("lastTransitionTime"))
    return JobView(RUNNING, min(done, total), total, retries)


def termination_summary(pods: Iterable[dict[str, Any]], job: str) -> dict[str, Any] | None:
    """The JSON object in the termination message of Job ``job``'s succeeded pod (None: none readable)."""
    for pod in pods:
        labels = (pod.get("metadata") or {}).get("labels") or {}
        if job not in (labels.get("job-name"), labels.get("batch.kubernetes.io/job-name")):
            continue
        for container in (pod.get("status") or {}).get("containerStatuses") or []:
            terminated = (container.get("state") or {}).get("terminated") or {}
            if terminated.get("exitCode") != 0:
                continue
            try:
                summary = json.loads(terminated.get("message") or "")
            except ValueError:
                continue
            if isinstance(summary, dict):
                return summary
    return None


# evaluate's summary keys -> status.evaluation's (Kubernetes spells fields in camelCase)
FIGURES = {"collection": "collection", "queries": "queries", "k": "k", "recall": "recall", "mrr": "mrr",
           "ndcg10": "ndcg10", "zero_hit": "zeroHit", "p50_ms": "p50Ms", "p99_ms": "p99Ms",
           "regression": "regression", "worse": "worse", "unresolved": "unresolved"}


def evaluation_figures(pods: Iterable[dict[str, Any]], job: str) -> dict[str, Any] | None:
    """The figures evaluate left in Job ``job``'s pod (None: none readable)."""
    summary = termination_summary(pods, job)
    if summary is None:
        return None
    try:
        figures = {FIGURES[k]: summary[k] for k in FIGURES if k in summary}
        if "compare" in summary:
            figures |= {"compared": summary["compare"]["collection"],
                        "comparedRecall": summary["compare"]["recall"]}
        float(figures["recall"]), float(figures["p99Ms"])
        return figures
    except (ValueError, TypeError, KeyError, AttributeError):
        return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def published_figures(pods: Iterable[dict[str, Any]], job: str, ts: str) -> dict[str, Any] | None:
    """status.published from the outcome publish (or ``publish --rollback``) left in Job ``job``'s pod:
    the collection the alias points at now, the one before, its documents and recall@k (None: none)."""
    summary = termination_summary(pods, job) or {}
    if not isinstance(summary.get("collection"), str):
        return None
    out: dict[str, Any] = {"collection": summary["collection"], "at": ts}
    if isinstance(summary.get("previous"), str):
        out["previous"] = summary["previous"]
    for key in ("documents", "k"):
        if _number(summary.get(key)):
            out[key] = int(summary[key])
    if _number(summary.get("recall")):
        out["recall"] = float(summary["recall"])
    if summary.get("forced"):
        out["forced"] = True
    if summary.get("rollback"):
        out["rollback"] = True
    return out
