"""Operations on an IndexJob between its runs, each one Job: rollback and snapshot (pure functions).

``spec.rollback`` (an integer, like ``spec.retry``): raising it points the
scene's alias back at the version it served before (``mmsearch job publish
--rollback``, which goes back through the alias's history to the first
version still kept and complete). A counter rather than a target version
because the operator, not the user, knows which versions are kept, and
because a bump is an edit GitOps tools apply once. Decisions:

- The first value seen is taken as done: an IndexJob created with
  ``rollback: 3`` rolls nothing back. ``status.rollback.requested`` is the
  value served last; lowering the counter does nothing.
- A rollback waits for a running stage to end; the stages and the version a
  run built stay as they are. The rollback Job's pod writes its outcome to
  its termination message, and ``status.published`` (the collection the
  alias points at, its documents and recall) follows it.
- Events: ``RollbackStarted``, ``RolledBack`` (from and to), or Warning
  ``RollbackFailed`` with the Job's reason (bump again to retry).

``spec.snapshots`` (``location``, an optional ``cron``, ``keep``, ``request``):
``mmsearch job snapshot`` of the version the scene's alias points at, into
``<location>/<namespace>/<name>/<UTC time>``, then ``--keep`` prunes that
folder to the newest N. On the IndexJob rather than an IndexSnapshot resource:
a snapshot needs what the IndexJob already says (image, Milvus, MongoDB, S3
credentials, volume, the scene), it must not run beside the IndexJob's own
runs (a sync writing the collection would make it inconsistent: it waits for
a running stage to end), and its life is the scene's. A restore is a run:
``spec.mode: restore`` builds a version from ``spec.restore.from`` and
publishes it like a build. Snapshots start on a cron fire (UTC, fires missed
while a stage ran start once it ends, only the latest) or when
``spec.snapshots.request`` is raised (the first value seen, like
``rollback``'s, takes none). ``status.snapshots`` has the running one, the
``last`` taken (location, collection, rows, summaries) and
``nextScheduleTime``; Events ``SnapshotStarted``, ``SnapshotTaken`` and
Warning ``SnapshotFailed``.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any, Callable, Iterable

from mmsearch.operator import plan
from mmsearch.operator.conditions import FAILED, RUNNING, SUCCEEDED, Event
from mmsearch.operator.cron import latest_due, next_after, parse
from mmsearch.operator.observe import observe_job, published_figures, termination_summary
from mmsearch.operator.schedule import read_time, stamp

ROLLBACK, SNAPSHOT = "rollback", "snapshot"


@dataclasses.dataclass
class Outcome:
    status: dict[str, Any]  # status.rollback
    create: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    events: list[Event] = dataclasses.field(default_factory=list)
    published: dict[str, Any] | None = None  # the new status.published, when the alias moved


def rollback(meta: dict[str, Any], spec: dict[str, Any], prev: dict[str, Any] | None,
             jobs: dict[str, dict[str, Any]], pods: Iterable[dict[str, Any]], generation: int, ts: str, *,
             busy: bool, build: Callable[..., dict[str, Any]]) -> Outcome:
    """The rollback's next step. ``prev``: status.rollback as stored; ``jobs``: the IndexJob's Jobs by name;
    ``busy``: a stage runs; ``build(name=, generation=, fingerprint=)``: the rollback Job's manifest."""
    want = int(spec.get("rollback") or 0)
    if prev is None:
        return Outcome({"requested": want})  # the first value seen is done (see the module docs)
    out = dict(prev)
    if out.get("state") != RUNNING:
        if want <= int(out.get("requested") or 0) or busy:
            return Outcome(out)
        fingerprint = plan.digest({ROLLBACK: want})
        out = {"requested": want, "name": ROLLBACK, "state": RUNNING, "startTime": ts, "generation": generation,
               "fingerprint": fingerprint, "job": plan.job_name(meta, ROLLBACK, generation, fingerprint)}
        started = Event("Normal", "RollbackStarted", f"rolling back scene {spec['scene']}: Job {out['job']}")
        return Outcome(out, [build(name=out["job"], generation=generation, fingerprint=fingerprint)], [started])
    outcome = _follow(out, jobs, ts, build)
    if out["state"] == SUCCEEDED:
        published = published_figures(pods, out["job"], ts) or {"rollback": True, "at": ts}
        published["rollback"] = True
        outcome.published = published
        outcome.events.append(Event("Normal", "RolledBack", f"alias {spec['scene']} -> "
                                    f"{published.get('collection', '?')} (rolled back from {published.get('previous', '?')})"))
    elif out["state"] == FAILED and out.get("message") and not outcome.events:
        outcome.events.append(Event("Warning", "RollbackFailed", out["message"] + " (bump spec.rollback to try again)"))
    return outcome


def _follow(out: dict[str, Any], jobs: dict[str, dict[str, Any]], ts: str, build: Callable[..., dict[str, Any]],
            target: str | None = None) -> Outcome:
    """Follow a running action's Job: create it when missing, end the action when the Job ends. ``out``
    (the action's status) is updated in place; ``state`` moves to Succeeded or Failed when the Job did."""
    job = jobs.get(out["job"])
    if job is None:
        kw = {"target": target} if target else {}
        return Outcome(out, [build(name=out["job"], generation=out["generation"], fingerprint=out["fingerprint"], **kw)])
    view = observe_job(job)
    if view.state == SUCCEEDED:
        out.update(state=SUCCEEDED, completionTime=view.completion_time or ts)
        out.pop("message", None)
    elif view.state == FAILED:
        out.update(state=FAILED, completionTime=view.completion_time or ts,
                   message=f"{out['name']} Job {out['job']} failed: {view.reason}: {view.message}".rstrip(": "))
    return Outcome(out)


def snapshot(meta: dict[str, Any], spec: dict[str, Any], prev: dict[str, Any] | None,
             jobs: dict[str, dict[str, Any]], pods: Iterable[dict[str, Any]], generation: int, now: datetime, *,
             busy: bool, build: Callable[..., dict[str, Any]]) -> Outcome | None:
    """The snapshot action's next step (see the module docs); None without ``spec.snapshots``."""
    conf = spec.get("snapshots")
    if not conf:
        return None
    ts, want = stamp(now), int(conf.get("request") or 0)
    if prev is None:
        prev = {"requested": want, "lastFireTime": ts}  # the first value seen is done; fires count from now
    out = dict(prev)
    cron = parse(conf["cron"]) if conf.get("cron") else None
    outcome = Outcome(out)
    if out.get("state") == RUNNING:
        outcome = _follow(out, jobs, ts, build, target=out.get("location"))
        if out["state"] == SUCCEEDED:
            taken = termination_summary(pods, out["job"]) or {}
            out["last"] = {"location": out["location"], "at": ts, **{k: taken[k] for k in ("collection", "rows", "summaries")
                                                                      if k in taken}}
            outcome.events.append(Event("Normal", "SnapshotTaken", f"snapshot of {taken.get('collection', spec['scene'])} "
                                        f"({taken.get('rows', '?')} rows) at {out['location']}"))
        elif out["state"] == FAILED:
            outcome.events.append(Event("Warning", "SnapshotFailed", out["message"] + " (the next fire or a bump of "
                                                                                      "spec.snapshots.request tries again)"))
    else:
        due = latest_due(cron, read_time(out.get("lastFireTime")) or now, now) if cron else None
        if (due is not None or want > int(out.get("requested") or 0)) and not busy:
            when = due or now
            location = f"{conf['location'].rstrip('/')}/{meta.get('namespace', '')}/{meta['name']}/{when:%Y%m%dT%H%M%SZ}"
            fingerprint = plan.digest({SNAPSHOT: location})
            out = {**{k: v for k, v in out.items() if k in ("last",)}, "requested": want, "name": SNAPSHOT,
                   "lastFireTime": stamp(due) if due else out.get("lastFireTime"), "state": RUNNING, "startTime": ts,
                   "location": location, "generation": generation, "fingerprint": fingerprint,
                   "job": plan.job_name(meta, SNAPSHOT, generation, fingerprint)}
            outcome = Outcome(out, [build(name=out["job"], generation=generation, fingerprint=fingerprint,
                                          target=location)],
                              [Event("Normal", "SnapshotStarted", f"snapshot of scene {spec['scene']} to {location}: "
                                                                  f"Job {out['job']}")])
    if cron is not None:
        upcoming = next_after(cron, max(now, read_time(out.get("lastFireTime")) or now))
        out["nextScheduleTime"] = stamp(upcoming) if upcoming else None
    return outcome
