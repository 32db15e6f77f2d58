"""The IndexJob state machine: next status and next actions from spec, generation and observed Jobs.

:func:`reconcile` is pure and level-triggered: given the object as stored
(spec, metadata, the status last written) and the stage Jobs that exist now,
it returns the status to write, the Jobs to create, the Jobs to delete and
the Events to emit. Calling it again with the same inputs changes nothing, so
the handlers may call it on any trigger, any number of times, and after an
operator restart at any point.

Per stage, status keeps: state (Pending, Running, Succeeded, Failed,
Skipped), the Job's name, the generation it was launched at, start and end
times, progress (done/total; an encode's completed shards), retries, a
message, and the stage fingerprint (:mod:`mmsearch.operator.plan`).

- A new generation keeps every Succeeded/Running stage whose fingerprint did
  not change, resets the others to Pending (deleting a superseded Job that is
  still running), and relaunches a Failed stage: editing the spec (for
  instance bumping ``spec.retry``) is how a Failed IndexJob is retried.
- Stages run one after another, in :data:`spec.STAGES` order. The first stage
  that is not done is the current one: Pending -> create its Job; Running ->
  read its Job (Complete -> Succeeded and go on; Failed -> the stage and the
  IndexJob are Failed with the Job's reason, and a Warning Event).
- A Job that should exist but does not (the operator died between creating
  it and writing status, or someone deleted it) is created again under the
  same name; "already exists" is success.
- ``spec.mode`` picks the stages (:data:`spec.MODES`): a full build, or
  ``incremental``: prepare then sync on the live version.
- The quality gate: when the evaluate Job completes, its figures are read from
  its pod's termination message (the summary ``mmsearch job evaluate`` wrote)
  into the evaluate stage and ``status.evaluation`` (no readable summary: the
  stage fails saying so). Before publish is launched they go through the same
  gate publish applies (:func:`mmsearch.core.quality.shortfalls`, thresholds
  from ``spec.evaluation``; the regression is against what evaluate compared
  with, the version published then): a candidate that falls short fails the
  publish stage and the IndexJob with reason ``QualityGate`` and a Warning
  Event with the numbers, and nothing is published. ``spec.evaluation.force``
  publishes anyway (the publish Job gets ``--force`` and records it).
"""
from __future__ import annotations

import copy
import dataclasses
import json
from datetime import datetime, timezone
from typing import Any, Iterable

from mmsearch.core.quality import Thresholds, shortfalls
from mmsearch.operator import plan
from mmsearch.operator.manifests import build_job
from mmsearch.operator.spec import GATE_NAMES, mode_stages, skipped_stages, with_defaults
from mmsearch.operator.validate import validate

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "Pending", "Running", "Succeeded", "Failed", "Skipped"
DONE = (SUCCEEDED, SKIPPED)


@dataclasses.dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


@dataclasses.dataclass
class Decision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # Job manifests
    delete: list[str] = dataclasses.field(default_factory=list)  # Job names
    events: list[Event] = dataclasses.field(default_factory=list)


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


# evaluate's summary keys -> status.evaluation's (Kubernetes spells fields in camelCase)
FIGURES = {"collection": "collection", "queries": "queries", "k": "k", "recall": "recall", "mrr": "mrr",
           "ndcg10": "ndcg10", "zero_hit": "zeroHit", "p50_ms": "p50Ms", "p99_ms": "p99Ms",
           "regression": "regression", "worse": "worse", "unresolved": "unresolved"}


def evaluation_figures(pods: Iterable[dict[str, Any]], job: str) -> dict[str, Any] | None:
    """The figures in the termination message of Job ``job``'s succeeded pod (None: none readable)."""
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
                figures = {FIGURES[k]: summary[k] for k in FIGURES if k in summary}
                if "compare" in summary:
                    figures |= {"compared": summary["compare"]["collection"],
                                "comparedRecall": summary["compare"]["recall"]}
                float(figures["recall"]), float(figures["p99Ms"])
                return figures
            except (ValueError, TypeError, KeyError, AttributeError):
                continue
    return None


def gate(spec: dict[str, Any], figures: dict[str, Any]) -> list[str]:
    """The gate's shortfalls for the evaluate stage's ``figures`` (empty: publish may go). Pure."""
    evaluation = spec.get("evaluation") or {}
    thresholds = Thresholds(evaluation.get("minRecall"), evaluation.get("maxRegression"), evaluation.get("maxP99Ms"))
    summary = {"k": figures.get("k"), "recall": figures["recall"], "p99_ms": figures["p99Ms"],
               "regression": figures.get("regression"), "unresolved": figures.get("unresolved")}
    if figures.get("compared"):
        summary["compare"] = {"collection": figures["compared"], "recall": figures["comparedRecall"]}
    return shortfalls(summary, thresholds, published=figures.get("compared"), names=GATE_NAMES)


def _set_progress(entry: dict[str, Any], done: int, total: int) -> None:
    entry.update(done=done, total=total, progress=f"{done}/{total}")


def _plan_entries(prev_stages: list[dict[str, Any]], fps: dict[str, str], skipped: set[str],
                  new_generation: bool, stages: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    """Carry over the stages whose inputs did not change; reset the rest. Returns (entries, Jobs to delete)."""
    previous = {e.get("name"): e for e in prev_stages}
    entries, delete = [], []
    for stage in stages:
        old = previous.get(stage) or {}
        keep = (old.get("fingerprint") == fps[stage] and old.get("state") in (SUCCEEDED, RUNNING, FAILED)
                and not (old.get("state") == FAILED and new_generation))
        if stage not in skipped and keep:
            entries.append(copy.deepcopy(old))
            continue
        if old.get("state") == RUNNING and old.get("job"):
            delete.append(old["job"])  # superseded while still running
        entries.append({"name": stage, "state": SKIPPED if stage in skipped else PENDING,
                        "fingerprint": fps[stage]})
    return entries, delete


def _condition(prev: list[dict[str, Any]], type_: str, status: str, reason: str, message: str,
               now: str) -> dict[str, Any]:
    old = next((c for c in prev if c.get("type") == type_), {})
    since = old.get("lastTransitionTime") if old.get("status") == status and old.get("lastTransitionTime") else now
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since}


def _failed_invalid(prev: dict[str, Any], problems: list[str], generation: int, now: str) -> Decision:
    message = "; ".join(problems)
    conditions = prev.get("conditions") or []
    status = {
        "phase": FAILED, "stage": None, "progress": None, "observedGeneration": generation,
        "stages": prev.get("stages") or [], "version": prev.get("version"),
        "conditions": [_condition(conditions, "Ready", "False", "InvalidSpec", message, now),
                       _condition(conditions, "Progressing", "False", "InvalidSpec", message, now)],
    }
    ready = next((c for c in conditions if c.get("type") == "Ready"), {})
    events = [] if (prev.get("phase") == FAILED and ready.get("message") == message) else [
        Event("Warning", "InvalidSpec", message)]
    return Decision(status=status, events=events)


def reconcile(obj: dict[str, Any], jobs: Iterable[dict[str, Any]], now: datetime,
              pods: Iterable[dict[str, Any]] = ()) -> Decision:
    """The next status and actions for IndexJob ``obj`` given its existing stage Jobs (and the pods of
    its evaluate Job, whose termination message holds the figures; see module docs)."""
    meta = obj.get("metadata") or {}
    spec = with_defaults(obj.get("spec"))
    prev = obj.get("status") or {}
    generation = int(meta.get("generation") or 1)
    ts = timestamp(now)

    problems = validate(spec, meta)
    if problems:
        return _failed_invalid(prev, problems, generation, ts)

    fps = plan.fingerprints(spec)
    new_generation = prev.get("observedGeneration") != generation
    entries, delete = _plan_entries(prev.get("stages") or [], fps, skipped_stages(spec), new_generation,
                                    mode_stages(spec))
    by_stage = {e["name"]: e for e in entries}
    observed = {(j.get("metadata") or {}).get("name"): j for j in jobs}
    create: list[dict[str, Any]] = []
    events: list[Event] = []
    version = by_stage.get("push-milvus", {}).get("version") or prev.get("version")

    for entry in entries:
        stage = entry["name"]
        if entry["state"] in DONE:
            continue
        if entry["state"] == FAILED:
            break
        if entry["state"] == PENDING:
            if stage == "push-milvus":
                version = entry["version"] = plan.collection_version(meta, generation)
            elif stage in ("evaluate", "publish") and not version:
                entry.update(state=FAILED, message=f"spec.skipStages: {stage} needs a collection built by "
                             "push-milvus; do not skip push-milvus before a first successful run")
                events.append(Event("Warning", "StageFailed", entry["message"]))
                break
            elif stage == "publish" and by_stage.get("evaluate", {}).get("state") == SUCCEEDED:
                missed = gate(spec, by_stage["evaluate"].get("evaluation") or {})
                if missed and not spec["evaluation"].get("force"):
                    entry.update(state=FAILED, reason="QualityGate", completionTime=ts,
                                 message=f"quality gate: {'; '.join(missed)}; {spec['scene']}_{version} not published "
                                         "(set spec.evaluation.force to publish anyway)")
                    events.append(Event("Warning", "QualityGate", entry["message"]))
                    break
            entry.update(state=RUNNING, generation=generation, startTime=ts,
                         job=plan.job_name(meta, stage, generation, fps[stage]))
            for key in ("completionTime", "message", "reason", "evaluation"):
                entry.pop(key, None)
            _set_progress(entry, 0, spec["encode"]["shards"] if stage == "encode" else 1)
            events.append(Event("Normal", "StageStarted", f"{stage}: started Job {entry['job']}"))
        job = observed.get(entry["job"])
        if job is None:
            create.append(build_job(obj, spec, stage, name=entry["job"], generation=entry["generation"],
                                    fingerprint=entry["fingerprint"], version=version))
            break
        view = observe_job(job)
        _set_progress(entry, view.done, view.total)
        entry["retries"] = view.retries
        if view.state == SUCCEEDED and stage == "evaluate" and "evaluation" not in entry:
            figures = evaluation_figures(pods, entry["job"])
            if figures is None:
                entry.update(state=FAILED, completionTime=view.completion_time or ts,
                             message=f"Job {entry['job']} completed but its pod left no evaluation summary in its "
                                     "termination message; re-run it (bump spec.retry)")
                events.append(Event("Warning", "StageFailed", f"{stage}: {entry['message']}"))
                break
            entry["evaluation"] = figures
        if view.state == SUCCEEDED:
            entry.update(state=SUCCEEDED, completionTime=view.completion_time or ts)
            entry.pop("message", None)
            continue
        if view.state == FAILED:
            entry.update(state=FAILED, completionTime=view.completion_time or ts,
                         message=f"Job {entry['job']} failed: {view.reason}: {view.message}".rstrip(": "))
            events.append(Event("Warning", "StageFailed", f"{stage}: {entry['message']}"))
            break
        if view.retries:
            entry["message"] = f"{view.retries} pod(s) failed; the Job retries (backoffLimit {spec['backoffLimit']})"
        break

    return Decision(status=_summary(prev, entries, spec, version, generation, ts), create=create,
                    delete=delete, events=events + _final_event(prev, entries, spec, version))


def _current(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in entries if e["state"] not in DONE), None)


def _phase(entries: list[dict[str, Any]]) -> str:
    current = _current(entries)
    if current is None:
        return SUCCEEDED
    return FAILED if current["state"] == FAILED else RUNNING if current["state"] == RUNNING else PENDING


def _summary(prev: dict[str, Any], entries: list[dict[str, Any]], spec: dict[str, Any], version: str | None,
             generation: int, ts: str) -> dict[str, Any]:
    phase, current = _phase(entries), _current(entries)
    finished = sum(e["state"] in DONE for e in entries)
    progress = f"{finished}/{len(entries)}"
    if current and current["state"] == RUNNING and current.get("total", 1) > 1:
        progress += f" {current['name']} {current['progress']}"
    conds = prev.get("conditions") or []
    if phase == SUCCEEDED:
        published = "publish" not in skipped_stages(spec)
        if spec.get("mode") == "incremental":
            reason, what = "Synced", f"the live version of scene {spec['scene']} synced with the source"
        elif published:
            reason, what = "Published", f"alias {spec['scene']} -> {spec['scene']}_{version}"
        else:
            reason, what = "Built", f"collection {spec['scene']}_{version} built, not published"
        ready = _condition(conds, "Ready", "True", reason, what, ts)
        progressing = _condition(conds, "Progressing", "False", SUCCEEDED, "all stages done", ts)
    elif phase == FAILED:
        reason = current.get("reason") or "StageFailed"
        ready = _condition(conds, "Ready", "False", reason, f"{current['name']}: {current['message']}", ts)
        progressing = _condition(conds, "Progressing", "False", reason, current["message"], ts)
    else:
        what = f"{current['name']} running as Job {current.get('job')}" if current else "starting"
        ready = _condition(conds, "Ready", "False", "InProgress", what, ts)
        progressing = _condition(conds, "Progressing", "True", "StageRunning", what, ts)
    evaluated = next((e for e in entries if e["name"] == "evaluate" and e.get("evaluation")), None)
    return {
        "phase": phase,
        "stage": current["name"] if current else None,
        "progress": progress,
        "version": version,
        "evaluation": dict(evaluated["evaluation"]) if evaluated else None,
        "observedGeneration": generation,
        "stages": entries,
        "conditions": [ready, progressing],
    }


def _final_event(prev: dict[str, Any], entries: list[dict[str, Any]], spec: dict[str, Any],
                 version: str | None) -> list[Event]:
    """A Normal Event when the IndexJob becomes Succeeded (not on every later reconcile)."""
    if _phase(entries) != SUCCEEDED or prev.get("phase") == SUCCEEDED:
        return []
    if spec.get("mode") == "incremental":
        return [Event("Normal", "Succeeded", f"the live version of scene {spec['scene']} synced")]
    return [Event("Normal", "Succeeded", f"index {spec['scene']}_{version} ready")]


def status_patch(old: dict[str, Any] | None, new: dict[str, Any]) -> dict[str, Any]:
    """A JSON merge patch turning ``old`` into ``new`` (removed keys -> None; lists replaced whole)."""
    old = old or {}
    patch: dict[str, Any] = {}
    for key in set(old) | set(new):
        a, b = old.get(key), new.get(key)
        if key not in new or b is None:
            if a is not None:
                patch[key] = None
        elif isinstance(a, dict) and isinstance(b, dict):
            sub = status_patch(a, b)
            if sub:
                patch[key] = sub
        elif a != b:
            patch[key] = b
    return patch
