"""The IndexJob's summary status and its standard conditions, from its stage entries (pure functions).

Three conditions, each with type, status, reason, message, lastTransitionTime
(kept while the status does not change) and observedGeneration (the
generation they describe), as ``kubectl wait --for=condition=Ready`` and
kstatus-based tools read them:

- **Ready**: True once the current generation's run is done: ``Published``
  (the scene's alias points at the version it built), ``Synced`` (an
  incremental run), ``Built`` (publish disabled) or ``RolledBack`` (the alias
  was moved back by ``spec.rollback``). False with ``InProgress``,
  ``Scheduled`` (waiting for the first run of ``spec.schedule``), or the
  failure's reason.
- **Progressing**: True while a stage Job (or a rollback or snapshot Job) runs.
- **Degraded**: True when the last run failed (``QualityGate``,
  ``StageFailed``, ``InvalidSpec``), or the last rollback or snapshot
  failed (``RollbackFailed``, ``SnapshotFailed``); its message
  says what the scene's alias still serves, which a failure never touches.
  False with ``AsExpected`` otherwise.
"""
from __future__ import annotations

import dataclasses
from typing import Any

from mmsearch.operator.spec import skipped_stages

PENDING, RUNNING, SUCCEEDED, FAILED, SKIPPED = "Pending", "Running", "Succeeded", "Failed", "Skipped"
DONE = (SUCCEEDED, SKIPPED)
# an action's Progressing reason while it runs, and Degraded reason when it failed
ACTION_REASONS = {"rollback": ("RollingBack", "RollbackFailed"), "snapshot": ("TakingSnapshot", "SnapshotFailed")}


@dataclasses.dataclass(frozen=True)
class Event:
    """A Kubernetes Event the handlers post on the IndexJob."""
    type: str  # Normal | Warning
    reason: str
    message: str


def condition(prev: list[dict[str, Any]], type_: str, status: str, reason: str, message: str, now: str,
              generation: int) -> dict[str, Any]:
    """One condition; ``lastTransitionTime`` moves only when its status changes."""
    old = next((c for c in prev if c.get("type") == type_), {})
    since = old.get("lastTransitionTime") if old.get("status") == status and old.get("lastTransitionTime") else now
    return {"type": type_, "status": status, "reason": reason, "message": message, "lastTransitionTime": since,
            "observedGeneration": generation}


def live_note(spec: dict[str, Any], published: dict[str, Any] | None) -> str:
    """What the scene's alias serves, as far as this IndexJob knows (a failure never moves it)."""
    if published and published.get("collection"):
        return f"alias {spec.get('scene')} still -> {published['collection']}"
    return f"alias {spec.get('scene')} not moved"


def failed_invalid(prev: dict[str, Any], problems: list[str], generation: int, now: str) -> dict[str, Any]:
    """The status of an IndexJob whose spec cannot run (see :mod:`mmsearch.operator.validate`)."""
    message = "; ".join(problems)
    conds = prev.get("conditions") or []
    status = {k: v for k, v in prev.items() if k not in ("conditions", "stage", "progress")}
    status |= {"phase": FAILED, "stage": None, "progress": None, "observedGeneration": generation,
               "stages": prev.get("stages") or [], "version": prev.get("version")}
    status["conditions"] = [
        condition(conds, "Ready", "False", "InvalidSpec", message, now, generation),
        condition(conds, "Progressing", "False", "InvalidSpec", message, now, generation),
        condition(conds, "Degraded", "True", "InvalidSpec", message, now, generation)]
    return status


def current(entries: list[dict[str, Any]]) -> dict[str, Any] | None:
    return next((e for e in entries if e["state"] not in DONE), None)


def phase(entries: list[dict[str, Any]]) -> str:
    now = current(entries)
    if now is None:
        return SUCCEEDED
    return FAILED if now["state"] == FAILED else RUNNING if now["state"] == RUNNING else PENDING


def _ready(spec: dict[str, Any], version: str | None, published: dict[str, Any] | None) -> tuple[str, str]:
    if published and published.get("rollback"):
        return "RolledBack", (f"alias {spec['scene']} -> {published.get('collection')} (rolled back from "
                              f"{published.get('previous')})")
    if spec.get("mode") == "incremental":
        return "Synced", f"the live version of scene {spec['scene']} synced with the source"
    if "publish" not in skipped_stages(spec):
        return "Published", f"alias {spec['scene']} -> {spec['scene']}_{version}"
    return "Built", f"collection {spec['scene']}_{version} built, not published"


def summary(prev: dict[str, Any], entries: list[dict[str, Any]], spec: dict[str, Any], version: str | None,
            generation: int, ts: str, *, extra: dict[str, Any], hold: str | None = None,
            actions: list[dict[str, Any]] = ()) -> dict[str, Any]:
    """The status to write. ``extra``: the fields other parts own (published, rollback, snapshots,
    schedule, run); ``hold``: why no stage runs yet (a schedule's first run); ``actions``: the status of
    each rollback or snapshot (a running one is Progressing, a failed one Degraded)."""
    ph, now = phase(entries), current(entries)
    finished = sum(e["state"] in DONE for e in entries)
    progress = f"{finished}/{len(entries)}"
    if now and now["state"] == RUNNING and now.get("total", 1) > 1:
        progress += f" {now['name']} {now['progress']}"
    conds, g = prev.get("conditions") or [], generation
    published = extra.get("published")
    degraded = condition(conds, "Degraded", "False", "AsExpected", "the last run did not fail", ts, g)
    if hold:
        ready = condition(conds, "Ready", "False", "Scheduled", hold, ts, g)
        progressing = condition(conds, "Progressing", "False", "Scheduled", hold, ts, g)
    elif ph == SUCCEEDED:
        reason, what = _ready(spec, version, published)
        ready = condition(conds, "Ready", "True", reason, what, ts, g)
        progressing = condition(conds, "Progressing", "False", SUCCEEDED, "all stages done", ts, g)
    elif ph == FAILED:
        reason = now.get("reason") or "StageFailed"
        ready = condition(conds, "Ready", "False", reason, f"{now['name']}: {now['message']}", ts, g)
        progressing = condition(conds, "Progressing", "False", reason, now["message"], ts, g)
        degraded = condition(conds, "Degraded", "True", reason,
                             f"{now['name']}: {now['message']}; {live_note(spec, published)}", ts, g)
    else:
        what = f"{now['name']} running as Job {now.get('job')}" if now else "starting"
        ready = condition(conds, "Ready", "False", "InProgress", what, ts, g)
        progressing = condition(conds, "Progressing", "True", "StageRunning", what, ts, g)
    stage = now["name"] if now and not hold else None
    for action in actions:
        running, failed = ACTION_REASONS[action["name"]]
        if action.get("state") == RUNNING:
            what = f"{action['name']} running as Job {action.get('job')}"
            progressing = condition(conds, "Progressing", "True", running, what, ts, g)
            stage = action["name"]
        elif action.get("state") == FAILED and ph != FAILED:
            degraded = condition(conds, "Degraded", "True", failed,
                                 f"{action.get('message')}; {live_note(spec, published)}", ts, g)
    evaluated = next((e for e in entries if e["name"] == "evaluate" and e.get("evaluation")), None)
    return {
        "phase": ph,
        "stage": stage,
        "progress": progress,
        "version": version,
        "evaluation": dict(evaluated["evaluation"]) if evaluated else None,
        "observedGeneration": generation,
        "stages": entries,
        **extra,
        "conditions": [ready, progressing, degraded],
    }
