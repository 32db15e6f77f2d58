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
  publishes anyway (the publish Job gets ``--force`` and records it). Either
  way the decision is an Event: ``GatePassed``, ``GateForced`` or ``QualityGate``.
- publish (and a rollback) leave their outcome in the pod's termination
  message: ``status.published`` is what the scene's alias points at after it,
  with the version's documents and recall@k (the printer columns), and a
  ``Published`` Event says from what to what.
- ``spec.schedule`` (:mod:`mmsearch.operator.schedule`) starts numbered runs
  (``status.run``): every stage goes back to Pending and its Job gets a name of
  its own; ``spec.rollback`` (:mod:`mmsearch.operator.actions`) runs a
  rollback Job between runs. Conditions: :mod:`mmsearch.operator.conditions`.
"""
from __future__ import annotations

import copy
import dataclasses
from datetime import datetime, timezone
from typing import Any, Iterable

from mmsearch.core.quality import Thresholds, shortfalls
from mmsearch.operator import actions, plan, schedule
from mmsearch.operator.conditions import (DONE, FAILED, PENDING, RUNNING, SKIPPED, SUCCEEDED, Event,
                                          failed_invalid, phase, summary)
from mmsearch.operator.manifests import build_job
from mmsearch.operator.observe import (FIGURES, JobView, count_indexes, evaluation_figures, observe_job,
                                       published_figures, timestamp)
from mmsearch.operator.spec import GATE_NAMES, mode_stages, skipped_stages, with_defaults
from mmsearch.operator.validate import validate

__all__ = ["DONE", "FAILED", "FIGURES", "PENDING", "RUNNING", "SKIPPED", "SUCCEEDED", "Decision", "Event", "JobView",
           "count_indexes", "evaluation_figures", "gate", "observe_job", "reconcile", "pods_to_read", "status_patch",
           "timestamp"]
SUMMARY_STAGES = ("evaluate", "publish")  # stages whose pods leave a summary the operator reads


@dataclasses.dataclass
class Decision:
    status: dict[str, Any]
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # Job manifests
    delete: list[str] = dataclasses.field(default_factory=list)  # Job names
    events: list[Event] = dataclasses.field(default_factory=list)


def pods_to_read(status: dict[str, Any] | None) -> str | None:
    """The stage whose pods the next reconcile needs (their termination message), or None."""
    status = status or {}
    for action, key in ((actions.ROLLBACK, "rollback"), (actions.SNAPSHOT, "snapshots")):
        if (status.get(key) or {}).get("state") == RUNNING:
            return action
    return next((e["name"] for e in status.get("stages") or []
                 if e.get("name") in SUMMARY_STAGES and e.get("state") == RUNNING), None)


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
                  new_generation: bool, stages: tuple[str, ...],
                  fresh: bool = False) -> tuple[list[dict[str, Any]], list[str]]:
    """Carry over the stages whose inputs did not change; reset the rest (all of them for a ``fresh`` run).
    Returns (entries, Jobs to delete)."""
    previous = {e.get("name"): e for e in prev_stages}
    entries, delete = [], []
    for stage in stages:
        old = previous.get(stage) or {}
        keep = (old.get("fingerprint") == fps[stage] and old.get("state") in (SUCCEEDED, RUNNING, FAILED)
                and not (old.get("state") == FAILED and new_generation) and not fresh)
        if stage not in skipped and keep:
            entries.append(copy.deepcopy(old))
            continue
        if old.get("state") == RUNNING and old.get("job"):
            delete.append(old["job"])  # superseded while still running
        entries.append({"name": stage, "state": SKIPPED if stage in skipped else PENDING,
                        "fingerprint": fps[stage]})
    return entries, delete


@dataclasses.dataclass
class _Run:
    """What one pass over the stages did."""
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    published: dict[str, Any] | None = None


def _gate_event(spec: dict[str, Any], figures: dict[str, Any], missed: list[str], collection: str) -> Event:
    if missed:
        return Event("Warning", "GateForced", f"quality gate: {'; '.join(missed)}; {collection} published anyway "
                                              "(spec.evaluation.force)")
    what = f"recall@{figures.get('k')} {figures.get('recall')}, p99 {figures.get('p99Ms')} ms"
    if figures.get("compared"):
        what += f" (published {figures['compared']}: recall {figures.get('comparedRecall')})"
    return Event("Normal", "GatePassed", f"quality gate passed: {collection}: {what}; publishing")


def _start(entry: dict[str, Any], spec: dict[str, Any], by_stage: dict[str, dict[str, Any]], meta: dict[str, Any],
           generation: int, run: int, version: str | None, ts: str, out: _Run) -> str | None:
    """Launch a Pending stage (its entry becomes Running), or fail it; returns the version it builds."""
    stage, collection = entry["name"], f"{spec['scene']}_{version}"
    if stage in ("push-milvus", "restore"):  # the stages that build a new version
        version = entry["version"] = plan.collection_version(meta, generation)
    elif stage in ("evaluate", "publish") and not version:
        entry.update(state=FAILED, message=f"spec.skipStages: {stage} needs a collection built by "
                     "push-milvus; do not skip push-milvus before a first successful run")
        out.events.append(Event("Warning", "StageFailed", entry["message"]))
        return version
    elif stage == "publish" and by_stage.get("evaluate", {}).get("state") == SUCCEEDED:
        figures = by_stage["evaluate"].get("evaluation") or {}
        missed = gate(spec, figures)
        if missed and not spec["evaluation"].get("force"):
            entry.update(state=FAILED, reason="QualityGate", completionTime=ts,
                         message=f"quality gate: {'; '.join(missed)}; {collection} not published "
                                 "(set spec.evaluation.force to publish anyway)")
            out.events.append(Event("Warning", "QualityGate", entry["message"]))
            return version
        out.events.append(_gate_event(spec, figures, missed, collection))
    entry.update(state=RUNNING, generation=generation, startTime=ts,
                 job=plan.job_name(meta, stage, generation, entry["fingerprint"], run))
    for key in ("completionTime", "message", "reason", "evaluation"):
        entry.pop(key, None)
    _set_progress(entry, 0, spec["encode"]["shards"] if stage == "encode" else 1)
    out.events.append(Event("Normal", "StageStarted", f"{stage}: started Job {entry['job']}"))
    return version


def _run_stages(obj: dict[str, Any], spec: dict[str, Any], entries: list[dict[str, Any]],
                observed: dict[str, dict[str, Any]], pods: list[dict[str, Any]], generation: int, run: int,
                version: str | None, ts: str) -> tuple[_Run, str | None]:
    """One pass over the stages in order: launch the next, read the running one's Job."""
    meta, out = obj.get("metadata") or {}, _Run()
    by_stage = {e["name"]: e for e in entries}
    for entry in entries:
        stage = entry["name"]
        if entry["state"] in DONE:
            continue
        if entry["state"] == FAILED:
            break
        if entry["state"] == PENDING:
            version = _start(entry, spec, by_stage, meta, generation, run, version, ts, out)
            if entry["state"] == FAILED:
                break
        job = observed.get(entry["job"])
        if job is None:
            out.create.append(build_job(obj, spec, stage, name=entry["job"], generation=entry["generation"],
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
                out.events.append(Event("Warning", "StageFailed", f"{stage}: {entry['message']}"))
                break
            entry["evaluation"] = figures
        if view.state == SUCCEEDED:
            entry.update(state=SUCCEEDED, completionTime=view.completion_time or ts)
            entry.pop("message", None)
            if stage == "publish":
                out.published = _published(pods, entry["job"], spec, version, by_stage, ts)
                out.events.append(Event("Normal", "Published", f"alias {spec['scene']} -> "
                                        f"{out.published['collection']} (was {out.published.get('previous') or 'unset'})"))
            continue
        if view.state == FAILED:
            entry.update(state=FAILED, completionTime=view.completion_time or ts,
                         message=f"Job {entry['job']} failed: {view.reason}: {view.message}".rstrip(": "))
            out.events.append(Event("Warning", "StageFailed", f"{stage}: {entry['message']}"))
            break
        if view.retries:
            entry["message"] = f"{view.retries} pod(s) failed; the Job retries (backoffLimit {spec['backoffLimit']})"
        break
    return out, version


def _published(pods: list[dict[str, Any]], job: str, spec: dict[str, Any], version: str | None,
               by_stage: dict[str, dict[str, Any]], ts: str) -> dict[str, Any]:
    """status.published after publish: its pod's outcome, else what the operator knows (no documents)."""
    found = published_figures(pods, job, ts)
    if found is None:
        found = {"collection": f"{spec['scene']}_{version}", "at": ts}
        figures = by_stage.get("evaluate", {}).get("evaluation") or {}
        found |= {k: figures[k] for k in ("recall", "k") if k in figures}
    return found


def reconcile(obj: dict[str, Any], jobs: Iterable[dict[str, Any]], now: datetime,
              pods: Iterable[dict[str, Any]] = ()) -> Decision:
    """The next status and actions for IndexJob ``obj`` given its existing Jobs (and the pods of its
    evaluate, publish or rollback Job, whose termination message holds their outcome; see module docs)."""
    meta = obj.get("metadata") or {}
    spec = with_defaults(obj.get("spec"))
    prev = obj.get("status") or {}
    generation = int(meta.get("generation") or 1)
    ts, pods = timestamp(now), list(pods)

    problems = validate(spec, meta)
    if problems:
        status = failed_invalid(prev, problems, generation, ts)
        ready = next((c for c in prev.get("conditions") or [] if c.get("type") == "Ready"), {})
        repeat = prev.get("phase") == FAILED and ready.get("message") == "; ".join(problems)
        return Decision(status=status, events=[] if repeat else [Event("Warning", "InvalidSpec", "; ".join(problems))])

    fps = plan.fingerprints(spec)
    new_generation = prev.get("observedGeneration") != generation
    stages, skipped = mode_stages(spec), skipped_stages(spec)
    entries, delete = _plan_entries(prev.get("stages") or [], fps, skipped, new_generation, stages)
    observed = {(j.get("metadata") or {}).get("name"): j for j in jobs}
    run, extra = int(prev.get("run") or 0), {k: prev[k] for k in ("published",) if prev.get(k)}
    events: list[Event] = []
    hold = None
    sched = spec.get("schedule")
    if sched:
        busy = phase(entries) == RUNNING or (phase(entries) == PENDING and run > 0)
        acting = any((prev.get(key) or {}).get("state") == RUNNING for key in ("rollback", "snapshots"))
        fire = schedule.decide(sched, prev.get("schedule") or {}, _created(meta, now), now, busy, wait=acting)
        events += fire.events
        if fire.start:
            run += 1
            entries, superseded = _plan_entries(entries, fps, skipped, new_generation, stages, fresh=True)
            delete += superseded
            fire.status["active"] = {"run": run, "scheduledTime": fire.start, "startTime": ts}
        if run == 0 and phase(entries) == PENDING:  # like a CronJob: nothing runs before the first fire
            hold = f"the first run starts at {fire.status.get('nextScheduleTime') or 'no time (suspended)'}"
        extra["schedule"] = fire.status
    if run:
        extra["run"] = run
    version = next((e.get("version") for e in entries if e["name"] in ("push-milvus", "restore") and e.get("version")),
                   None) or prev.get("version")
    done = _Run()
    if hold is None:
        done, version = _run_stages(obj, spec, entries, observed, pods, generation, run, version, ts)
    if done.published:
        extra["published"] = done.published
    ph = phase(entries)
    active = (extra.get("schedule") or {}).get("active")
    if active and active.get("run") == run and ph in (SUCCEEDED, FAILED):
        jobs_of_run = [e["job"] for e in entries if e.get("job")]
        extra["schedule"], pruned = schedule.finish(sched, extra["schedule"], ph, jobs_of_run, ts)
        delete += [j for j in pruned if j not in delete]
    stages_busy = ph in (RUNNING, PENDING) and hold is None
    snapping = (prev.get("snapshots") or {}).get("state") == RUNNING
    outcome = actions.rollback(meta, spec, prev.get("rollback"), observed, pods, generation, ts,
                               busy=stages_busy or snapping,
                               build=lambda **kw: build_job(obj, spec, actions.ROLLBACK, version=version, **kw))
    extra["rollback"] = outcome.status
    if outcome.published:
        extra["published"] = outcome.published
    snap = actions.snapshot(meta, spec, prev.get("snapshots"), observed, pods, generation, now,
                            busy=stages_busy or outcome.status.get("state") == RUNNING,
                            build=lambda **kw: build_job(obj, spec, actions.SNAPSHOT, version=version, **kw))
    create, events = done.create + outcome.create, events + done.events + outcome.events
    if snap is not None:
        extra["snapshots"] = snap.status
        create, events = create + snap.create, events + snap.events
    running = [a for a in (outcome.status, (snap.status if snap else {})) if a.get("name")]
    status = summary(prev, entries, spec, version, generation, ts, extra=extra, hold=hold, actions=running)
    return Decision(status=status, create=create, delete=delete,
                    events=events + _final_event(prev, entries, spec, version))


def _created(meta: dict[str, Any], now: datetime) -> datetime:
    return schedule.read_time(meta.get("creationTimestamp")) or now


def _final_event(prev: dict[str, Any], entries: list[dict[str, Any]], spec: dict[str, Any],
                 version: str | None) -> list[Event]:
    """A Normal Event when the IndexJob becomes Succeeded (not on every later reconcile)."""
    if phase(entries) != SUCCEEDED or prev.get("phase") == SUCCEEDED:
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
