"""``spec.schedule``: an incremental IndexJob run periodically, like a CronJob (pure functions).

Each fire of ``spec.schedule.cron`` (UTC, :mod:`mmsearch.operator.cron`)
starts a new *run* of the mode's stages (prepare, sync): ``status.run``
counts them and every run's Jobs get names of their own. ``status.schedule``
keeps ``lastScheduleTime`` (the fire time of the last run started),
``lastSuccessfulTime``, ``nextScheduleTime``, the ``active`` run and the
``history`` of finished runs (each with its fire time, start, end, result
and Jobs). Decisions:

- Full builds are not scheduled: a version is named by the generation, and a
  periodic rebuild of a scene is what a sync does in place (the CRD and
  :mod:`mmsearch.operator.validate` refuse a schedule on mode full).
- Like a CronJob, nothing runs before the first fire time after the object
  was created (Ready False, reason ``Scheduled``, saying when).
- ``concurrencyPolicy`` when a fire comes while a run is unfinished:
  ``Forbid`` skips that fire (Event ``RunSkipped``); ``Replace`` deletes the
  running Jobs and starts the new run (Event ``RunReplaced``); ``Allow``
  keeps the fire and starts it as soon as the current run ends. Two syncs of
  one live version never run at once, since both write the same collection:
  ``Allow`` means no fire is lost, not two runs side by side.
- ``startingDeadlineSeconds``: a fire not started within that many seconds
  (the operator was down, or ``Allow`` waited) is missed: Warning Event
  ``MissedSchedule``, ``lastMissedTime``, no run. Without it a late fire
  still runs, once, however many fires were missed (as a CronJob).
- A fire that comes while a rollback or snapshot Job runs waits for it (a
  sync beside a snapshot would make the snapshot inconsistent).
- ``suspend``: no fire starts a run; a run in progress finishes. Fires that
  pass while suspended are dropped, so resuming does not start a late run.
- ``successfulRunsHistoryLimit`` (default 3) and ``failedRunsHistoryLimit``
  (default 1) bound the history; the Jobs of a run that leaves it are deleted.
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timezone
from typing import Any

from mmsearch.operator.conditions import FAILED, SUCCEEDED, Event
from mmsearch.operator.cron import latest_due, next_after, parse

POLICIES = ("Allow", "Forbid", "Replace")


def stamp(t: datetime) -> str:
    return t.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def read_time(value: Any) -> datetime | None:
    """An RFC 3339 time as the API server writes it (``2026-01-01T00:00:00Z``); None when absent or bad."""
    if not isinstance(value, str) or not value:
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


@dataclasses.dataclass
class Fire:
    status: dict[str, Any]  # the new status.schedule
    start: str | None = None  # the fire time of a run to start now
    replace: bool = False  # delete the running Jobs first
    events: list[Event] = dataclasses.field(default_factory=list)


def decide(schedule: dict[str, Any], status: dict[str, Any], created: datetime, now: datetime, busy: bool, *,
           wait: bool = False) -> Fire:
    """What ``spec.schedule`` asks for at ``now``. ``status``: status.schedule as stored; ``busy``: a run is
    unfinished; ``wait``: a rollback or snapshot Job runs, so a due fire waits for it whatever the policy
    (it is not the run's to replace). The schedule was validated (the cron parses)."""
    cron = parse(schedule["cron"])
    out = {k: v for k, v in status.items() if k != "nextScheduleTime"}
    fire = Fire(out)
    base = read_time(status.get("lastFireTime")) or created
    due = latest_due(cron, base, now)
    deadline = schedule.get("startingDeadlineSeconds")
    policy = schedule.get("concurrencyPolicy") or "Allow"
    if due is not None:
        when = stamp(due)
        if schedule.get("suspend"):
            out["lastFireTime"] = when
        elif deadline is not None and (now - due).total_seconds() > deadline:
            out |= {"lastFireTime": when, "lastMissedTime": when}
            fire.events.append(Event("Warning", "MissedSchedule", f"the run scheduled for {when} was not started "
                                     f"within startingDeadlineSeconds ({deadline}): skipped"))
        elif busy and policy == "Forbid":
            out |= {"lastFireTime": when, "skipped": int(status.get("skipped") or 0) + 1}
            fire.events.append(Event("Normal", "RunSkipped", f"the run scheduled for {when} was skipped: run "
                                     f"{(status.get('active') or {}).get('run')} is unfinished "
                                     "(concurrencyPolicy Forbid)"))
        elif wait or (busy and policy == "Allow"):
            pass  # kept: it starts when the current run (or action) ends
        else:
            out |= {"lastFireTime": when, "lastScheduleTime": when}
            fire.start, fire.replace = when, busy
            if busy:
                fire.events.append(Event("Normal", "RunReplaced", f"run {(status.get('active') or {}).get('run')} "
                                         f"replaced by the run scheduled for {when} (concurrencyPolicy Replace)"))
    if not schedule.get("suspend"):
        upcoming = next_after(cron, max(now, read_time(out.get("lastFireTime")) or now))
        if upcoming is not None:
            out["nextScheduleTime"] = stamp(upcoming)
    return fire


def finish(schedule: dict[str, Any], status: dict[str, Any], result: str, jobs: list[str],
           ts: str) -> tuple[dict[str, Any], list[str]]:
    """Record the active run as finished with ``result`` (Succeeded or Failed): the new status.schedule
    and the Jobs of runs that fell out of the history (to delete)."""
    active = dict(status.get("active") or {})
    out = {k: v for k, v in status.items() if k != "active"}
    entry = {**active, "completionTime": ts, "result": result, "jobs": jobs}
    history = list(status.get("history") or []) + [entry]
    if result == SUCCEEDED:
        out["lastSuccessfulTime"] = ts
    limits = {SUCCEEDED: schedule.get("successfulRunsHistoryLimit", 3),
              FAILED: schedule.get("failedRunsHistoryLimit", 1)}
    kept, dropped = [], []
    for item in reversed(history):  # newest first
        same = sum(1 for k in kept if k.get("result") == item.get("result"))
        (kept if same < limits.get(item.get("result"), 1) else dropped).append(item)
    out["history"] = list(reversed(kept))
    return out, [job for item in dropped for job in item.get("jobs") or []]
