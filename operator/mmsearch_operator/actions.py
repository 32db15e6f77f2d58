"""One-off operations on a finished IndexJob, asked for by bumping a counter in its spec (pure functions).

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
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterable

from mmsearch.operator import plan
from mmsearch.operator.conditions import FAILED, RUNNING, SUCCEEDED, Event
from mmsearch.operator.observe import observe_job, published_figures

ROLLBACK = "rollback"


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
    job = jobs.get(out["job"])
    if job is None:
        return Outcome(out, [build(name=out["job"], generation=out["generation"], fingerprint=out["fingerprint"])])
    view = observe_job(job)
    if view.state == SUCCEEDED:
        out.update(state=SUCCEEDED, completionTime=view.completion_time or ts)
        published = published_figures(pods, out["job"], ts) or {"rollback": True, "at": ts}
        published["rollback"] = True
        done = Event("Normal", "RolledBack", f"alias {spec['scene']} -> {published.get('collection', '?')} "
                                             f"(rolled back from {published.get('previous', '?')})")
        return Outcome(out, events=[done], published=published)
    if view.state == FAILED:
        out.update(state=FAILED, completionTime=view.completion_time or ts,
                   message=f"rollback Job {out['job']} failed: {view.reason}: {view.message}".rstrip(": "))
        return Outcome(out, events=[Event("Warning", "RollbackFailed",
                                          out["message"] + " (bump spec.rollback to try again)")])
    return Outcome(out)
