"""The operator for real (kopf against kmock's emulator; the test plays the Job controller and the kubelet):
a full build, a gate failure and a rollback show every printer column and condition and post an Event for
each decision; a schedule fires on a clock the test moves, honours Forbid and suspend, keeps its history."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from tests.operator.cluster import emulated_cluster, running_operator
from tests.operator.helpers import finished_pod, indexjob, job_complete, load_crd, schema_errors, summary

pytestmark = pytest.mark.timeout(180)
EVALUATION = {"queries": "s3://mmsearch/queries.jsonl", "minRecall": 0.8}


def _new(name="demo", **spec):
    obj = indexjob(name, **spec)
    for key in ("uid", "generation", "namespace"):
        obj["metadata"].pop(key)
    return obj


def column(obj: dict[str, Any], path: str) -> Any:
    """A printer column's value: a dotted JSONPath, with ``[?(@.type=="X")]`` filters as kubectl reads them."""
    node: Any = obj
    for part in re.findall(r'\.(\w+)(?:\[\?\(@\.type=="(\w+)"\)\])?', path):
        key, kind = part
        node = (node or {}).get(key) if isinstance(node, dict) else None
        if kind:
            node = next((c for c in node or [] if c.get("type") == kind), None)
    return node


def columns(obj: dict[str, Any]) -> dict[str, Any]:
    (version,) = load_crd()["spec"]["versions"]
    return {c["name"]: column(obj, c["jsonPath"]) for c in version["additionalPrinterColumns"]}


async def _reasons(cluster) -> list[str]:
    return [e.get("reason") for e in await cluster.events()]


async def _complete(cluster, stage: str, outcome: dict | None = None, *, exclude=frozenset()) -> dict:
    job = await cluster.wait_job(stage, exclude=set(exclude))
    if outcome is not None:  # the kubelet's part: the termination message the container wrote
        await cluster.create_pod(finished_pod(job, json.dumps(outcome)))
    await cluster.set_job_status(job, job_complete)
    return job


async def test_a_build_a_gate_failure_and_a_rollback_show_every_column_condition_and_event():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.apply(_new(evaluation=EVALUATION))
        for stage in ("prepare", "export", "encode", "push-milvus", "push-mongo"):
            await _complete(cluster, stage)
        status = await cluster.wait_status("demo", lambda s: s.get("stage") == "evaluate")
        collection = f"stdlib_{status['version']}"
        await _complete(cluster, "evaluate", summary(0.9, compared="stdlib_v0_old", compared_recall=0.85)
                        | {"collection": collection})
        await _complete(cluster, "publish", {"alias": "stdlib", "collection": collection, "previous": "stdlib_v0_old",
                                             "dropped": [], "forced": False, "documents": 1200, "recall": 0.9, "k": 10})
        await cluster.wait_status("demo", lambda s: s.get("phase") == "Succeeded")
        obj = await cluster.indexjob("demo")
        assert schema_errors(obj) == []
        shown = columns(obj)
        assert shown | {"Age": None} == {
            "Scene": "stdlib", "Phase": "Succeeded", "Stage": None, "Documents": 1200, "Recall": 0.9,
            "Alias": collection, "Progress": "7/7", "Built": status["version"], "Ready": "True",
            "Next": None, "Snapshot": None, "Age": None}
        assert shown["Age"] == "2026-01-01T00:00:00Z"
        conds = {c["type"]: c for c in obj["status"]["conditions"]}
        assert {t: c["status"] for t, c in conds.items()} == {"Ready": "True", "Progressing": "False", "Degraded": "False"}
        assert all(set(c) == {"type", "status", "reason", "message", "lastTransitionTime", "observedGeneration"}
                   for c in conds.values())
        reasons = await cluster.wait_for("the publish Events", lambda: _published_events(cluster))
        assert reasons.index("GatePassed") < reasons.index("Published")

        # A new version below the gate: nothing published, Degraded says what still serves.
        first_evaluate = (await cluster.wait_job("evaluate"))["metadata"]["name"]
        await cluster.edit_spec("demo", milvus={"uri": "http://milvus:19530", "indexType": "FLAT"})
        await _complete(cluster, "push-milvus", exclude={j["metadata"]["name"] for j in await cluster.jobs()})
        status = await cluster.wait_status("demo", lambda s: s.get("stage") == "evaluate" and s.get("version")
                                           != obj["status"]["version"])
        await _complete(cluster, "evaluate", summary(0.5, compared=collection, compared_recall=0.9)
                        | {"collection": f"stdlib_{status['version']}"}, exclude={first_evaluate})
        failed = await cluster.wait_status("demo", lambda s: s.get("phase") == "Failed")
        conds = {c["type"]: c for c in failed["conditions"]}
        assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "QualityGate")
        assert f"alias stdlib still -> {collection}" in conds["Degraded"]["message"]
        assert conds["Degraded"]["observedGeneration"] == 2
        assert columns(await cluster.indexjob("demo"))["Alias"] == collection
        await cluster.wait_for("the QualityGate Event", lambda: _has(cluster, "QualityGate"))

        # Roll back: one rollback Job; the columns follow its outcome.
        await cluster.edit_spec("demo", rollback=1)
        job = await _complete(cluster, "rollback", {"alias": "stdlib", "collection": "stdlib_v0_old",
                                                    "previous": collection, "dropped": [], "rollback": True,
                                                    "documents": 1100, "recall": 0.85, "k": 10})
        assert job["spec"]["template"]["spec"]["containers"][0]["command"] == ["mmsearch", "job", "publish"]
        await cluster.wait_status("demo", lambda s: (s.get("rollback") or {}).get("state") == "Succeeded")
        shown = columns(await cluster.indexjob("demo"))
        assert (shown["Alias"], shown["Documents"], shown["Recall"]) == ("stdlib_v0_old", 1100, 0.85)
        await cluster.wait_for("the RolledBack Event", lambda: _has(cluster, "RolledBack"))
        assert schema_errors(await cluster.indexjob("demo")) == []


async def _published_events(cluster):
    reasons = await _reasons(cluster)
    return reasons if "Published" in reasons else None


async def _has(cluster, reason: str) -> bool:
    return reason in await _reasons(cluster)


class Clock:
    """The operator's time, moved by the test."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now


async def test_a_schedule_fires_on_the_tests_clock_honours_forbid_and_suspend_and_keeps_its_history():
    t0 = datetime(2026, 1, 1, tzinfo=timezone.utc)  # the emulated API server's creationTimestamp
    clock = Clock(t0 + timedelta(minutes=5))
    spec = {"mode": "incremental", "schedule": {"cron": "0 * * * *", "concurrencyPolicy": "Forbid"}}
    async with emulated_cluster() as cluster, running_operator(cluster, clock=clock):
        await cluster.apply(_new(**spec))
        waiting = await cluster.wait_status("demo", lambda s: s.get("phase") == "Pending")
        assert waiting["schedule"]["nextScheduleTime"] == "2026-01-01T01:00:00Z" and await cluster.jobs() == []
        assert columns(await cluster.indexjob("demo"))["Next"] == "2026-01-01T01:00:00Z"
        clock.now = t0 + timedelta(hours=1, seconds=20)
        prepare = await cluster.wait_job("prepare")
        # The next fire comes while run 1 is unfinished: Forbid skips it.
        clock.now = t0 + timedelta(hours=2, seconds=20)
        await cluster.wait_status("demo", lambda s: s["schedule"].get("skipped") == 1)
        assert len(await cluster.jobs()) == 1
        await cluster.wait_for("the RunSkipped Event", lambda: _has(cluster, "RunSkipped"))
        await cluster.set_job_status(prepare, job_complete)
        await _complete(cluster, "sync")
        done = await cluster.wait_status("demo", lambda s: s.get("phase") == "Succeeded")
        assert [(h["run"], h["result"], h["scheduledTime"]) for h in done["schedule"]["history"]] == [
            (1, "Succeeded", "2026-01-01T01:00:00Z")]
        assert done["schedule"]["lastScheduleTime"] == "2026-01-01T01:00:00Z" and done["schedule"]["lastSuccessfulTime"]
        # Suspended: the 03:00 fire is dropped, no Job starts.
        await cluster.edit_spec("demo", schedule={**spec["schedule"], "suspend": True})
        await _observed(cluster, 2)  # a reconcile that read the old spec must not see the new time
        clock.now = t0 + timedelta(hours=3, seconds=20)
        await cluster.wait_status("demo", lambda s: s["schedule"].get("lastFireTime") == "2026-01-01T03:00:00Z")
        st = (await cluster.indexjob("demo"))["status"]
        assert len(await cluster.jobs()) == 2 and st["run"] == 1, (st, [j["metadata"]["name"] for j in await cluster.jobs()])
        # Resumed: the 04:00 fire is run 2.
        await cluster.edit_spec("demo", schedule={**spec["schedule"], "suspend": False})
        await _observed(cluster, 3)
        clock.now = t0 + timedelta(hours=4, seconds=20)
        await cluster.wait_job("prepare", exclude={prepare["metadata"]["name"]})
        assert (await cluster.indexjob("demo"))["status"]["run"] == 2


async def _observed(cluster, generation: int) -> None:
    await cluster.wait_status("demo", lambda s: s.get("observedGeneration") == generation)
