"""The status a platform team reads (conditions, status.published, Events for each gate decision, publish
and rollback) and spec.schedule (a clock the test moves), over the pure state machine."""
from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pytest

from mmsearch.operator.cron import CronError, latest_due, next_after, parse
from tests.operator.helpers import finished_pod, indexjob, job_complete, job_failed, summary
from tests.operator.test_status import EVALUATION, Cluster, _evaluated, _to_evaluate

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)


def _conditions(c: Cluster) -> dict[str, dict]:
    return {x["type"]: x for x in c.obj["status"]["conditions"]}


def _stages(d) -> list[str]:
    return [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create]


def _finish_with(c: Cluster, job: dict, message: dict) -> None:
    c.pods[job["metadata"]["name"]] = finished_pod(job, json.dumps(message))
    c.jobs[job["metadata"]["name"]] = job_complete(job)


def _published(c: Cluster, recall: float, previous: str | None) -> None:
    """Evaluate passes; publish's pod leaves its outcome."""
    _to_evaluate(c)
    _evaluated(c, json.dumps(summary(recall, compared=previous, compared_recall=0.85)))
    job = c.job_of("publish")
    collection = f"stdlib_{c.obj['status']['version']}"
    _finish_with(c, job, {"alias": "stdlib", "collection": collection, "previous": previous, "dropped": [],
                          "forced": False, "documents": 1200, "recall": recall, "k": 10})
    c.step()


def test_a_full_build_a_gate_failure_and_a_rollback_show_every_condition_and_event():
    c = Cluster(indexjob(evaluation=EVALUATION))
    _published(c, 0.88, "stdlib_v0_old")
    status = c.obj["status"]
    assert status["phase"] == "Succeeded"
    assert status["published"] | {"at": None} == {"collection": "stdlib_v1_0f1e2d3c", "previous": "stdlib_v0_old",
                                                  "documents": 1200, "recall": 0.88, "k": 10, "at": None}
    conds = _conditions(c)
    assert {t: (x["status"], x["reason"]) for t, x in conds.items()} == {
        "Ready": ("True", "Published"), "Progressing": ("False", "Succeeded"), "Degraded": ("False", "AsExpected")}
    assert all(x["observedGeneration"] == 1 and x["lastTransitionTime"] for x in conds.values())
    reasons = [e[1] for e in c.events]
    assert reasons.index("GatePassed") < reasons.index("Published")
    (published,) = [e for e in c.events if e[1] == "Published"]
    assert published == ("Normal", "Published", "alias stdlib -> stdlib_v1_0f1e2d3c (was stdlib_v0_old)")
    assert "recall@10 0.88" in next(e[2] for e in c.events if e[1] == "GatePassed")

    # A new version that falls short: the live one stays, and Degraded says so.
    c.edit(encode={"batchSize": 32})
    _to_evaluate(c)
    _evaluated(c, json.dumps(summary(0.5, compared="stdlib_v1_0f1e2d3c", compared_recall=0.88)))
    conds = _conditions(c)
    assert c.obj["status"]["phase"] == "Failed"
    assert (conds["Degraded"]["status"], conds["Degraded"]["reason"]) == ("True", "QualityGate")
    assert "alias stdlib still -> stdlib_v1_0f1e2d3c" in conds["Degraded"]["message"]
    assert conds["Ready"]["status"] == "False" and conds["Degraded"]["observedGeneration"] == 2
    assert c.obj["status"]["published"]["collection"] == "stdlib_v1_0f1e2d3c"  # untouched
    assert [e[0] for e in c.events if e[1] == "QualityGate"] == ["Warning"]

    # A rollback: one Job running publish --rollback; status.published follows its outcome.
    c.edit(rollback=1)
    d = c.step()
    assert _stages(d) == ["rollback"]
    container = d.create[0]["spec"]["template"]["spec"]["containers"][0]
    assert container["command"] == ["mmsearch", "job", "publish"] and "--rollback" in container["args"]
    assert container["terminationMessagePath"] == "/dev/termination-log"
    assert c.obj["status"]["stage"] == "rollback"
    assert (_conditions(c)["Progressing"]["status"], _conditions(c)["Progressing"]["reason"]) == ("True", "RollingBack")
    _finish_with(c, c.jobs[c.obj["status"]["rollback"]["job"]],
                 {"alias": "stdlib", "collection": "stdlib_v0_old", "previous": "stdlib_v1_0f1e2d3c", "dropped": [],
                  "rollback": True, "documents": 1100, "recall": 0.85, "k": 10})
    c.step()
    status = c.obj["status"]
    assert status["rollback"]["state"] == "Succeeded" and status["published"]["collection"] == "stdlib_v0_old"
    assert status["published"]["documents"] == 1100 and status["published"]["rollback"] is True
    assert ("Normal", "RolledBack", "alias stdlib -> stdlib_v0_old (rolled back from stdlib_v1_0f1e2d3c)") in c.events
    assert _conditions(c)["Progressing"]["status"] == "False"
    again = c.step()
    assert not again.create and not again.events  # level-triggered


def test_an_indexjob_created_with_a_rollback_count_rolls_nothing_back_and_a_failed_rollback_is_degraded():
    c = Cluster(indexjob(rollback=3))
    c.run_all()
    assert not any(j["metadata"]["labels"]["mmsearch.io/stage"] == "rollback" for j in c.jobs.values())
    assert c.obj["status"]["rollback"] == {"requested": 3}
    c.edit(rollback=2)  # lowering it does nothing
    assert not _stages(c.step())
    c.edit(rollback=4)
    assert _stages(c.step()) == ["rollback"]
    name = c.obj["status"]["rollback"]["job"]
    c.jobs[name] = job_failed(c.jobs[name], message="cannot roll back scene stdlib: no previous version is kept")
    c.step()
    degraded = _conditions(c)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "RollbackFailed")
    assert "no previous version is kept" in degraded["message"]
    assert [e[0] for e in c.events if e[1] == "RollbackFailed"] == ["Warning"]


def test_a_forced_publish_is_an_event_of_its_own():
    c = Cluster(indexjob(evaluation={**EVALUATION, "force": True}))
    _to_evaluate(c)
    _evaluated(c, json.dumps(summary(0.5)))
    (forced,) = [e for e in c.events if e[1] == "GateForced"]
    assert forced[0] == "Warning" and "published anyway" in forced[2]


# --- spec.schedule ---------------------------------------------------------------------------------

def _scheduled(**schedule) -> Cluster:
    obj = indexjob(mode="incremental", schedule={"cron": "0 * * * *", **schedule})
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    c = Cluster(obj)
    c.clock = T0 - timedelta(seconds=10)  # step() adds 10 s
    return c


def _at(c: Cluster, when: datetime):
    c.clock = when - timedelta(seconds=10)
    return c.step()


def _finish_run(c: Cluster) -> None:
    for _ in range(4):
        stage = c.obj["status"].get("stage")
        if c.obj["status"]["phase"] != "Running":
            return
        c.set_job(stage, job_complete)
        c.step()
    raise AssertionError("the run did not end")


def test_nothing_runs_before_the_first_fire_then_each_fire_is_a_run_with_jobs_of_its_own():
    c = _scheduled()
    d = _at(c, T0 + timedelta(minutes=5))
    assert not d.create and c.obj["status"]["phase"] == "Pending"
    ready = _conditions(c)["Ready"]
    assert ready["reason"] == "Scheduled" and "2026-01-01T01:00:00Z" in ready["message"]
    assert c.obj["status"]["schedule"]["nextScheduleTime"] == "2026-01-01T01:00:00Z"
    d = _at(c, T0 + timedelta(hours=1, seconds=30))
    assert _stages(d) == ["prepare"] and c.obj["status"]["run"] == 1
    first = c.entry("prepare")["job"]
    assert c.obj["status"]["schedule"]["lastScheduleTime"] == "2026-01-01T01:00:00Z"
    _finish_run(c)
    sched = c.obj["status"]["schedule"]
    assert c.obj["status"]["phase"] == "Succeeded" and "active" not in sched and sched["lastSuccessfulTime"]
    assert [(h["run"], h["result"], h["scheduledTime"]) for h in sched["history"]] == [
        (1, "Succeeded", "2026-01-01T01:00:00Z")]
    assert not _at(c, T0 + timedelta(hours=1, minutes=30)).create
    d = _at(c, T0 + timedelta(hours=2, seconds=5))
    assert _stages(d) == ["prepare"] and c.entry("prepare")["job"] != first and c.obj["status"]["run"] == 2


def test_forbid_skips_a_fire_while_a_run_is_unfinished():
    c = _scheduled(concurrencyPolicy="Forbid")
    _at(c, T0 + timedelta(hours=1))
    running = c.entry("prepare")["job"]
    d = _at(c, T0 + timedelta(hours=2))
    assert not d.create and not d.delete and c.obj["status"]["run"] == 1
    assert [e[1] for e in c.events].count("RunSkipped") == 1 and c.obj["status"]["schedule"]["skipped"] == 1
    _finish_run(c)
    assert c.obj["status"]["run"] == 1 and [e[1] for e in c.events].count("RunSkipped") == 1
    assert c.entry("prepare")["job"] == running  # the skipped fire did not start after the run ended


def test_replace_stops_the_unfinished_run_and_allow_starts_the_fire_when_it_ends():
    c = _scheduled(concurrencyPolicy="Replace")
    _at(c, T0 + timedelta(hours=1))
    running = c.entry("prepare")["job"]
    d = _at(c, T0 + timedelta(hours=2))
    assert d.delete == [running] and _stages(d) == ["prepare"] and c.obj["status"]["run"] == 2
    assert any(e[1] == "RunReplaced" for e in c.events)

    c = _scheduled()  # Allow
    _at(c, T0 + timedelta(hours=1))
    d = _at(c, T0 + timedelta(hours=2))
    assert not d.create and not d.delete and c.obj["status"]["run"] == 1
    c.set_job("prepare", job_complete)
    c.step()
    c.set_job("sync", job_complete)
    c.step()  # run 1 ends
    d = c.step()  # the kept fire starts at the next reconcile (the timer's, within resync_seconds)
    assert c.obj["status"]["run"] == 2 and _stages(d) == ["prepare"]
    assert [h["run"] for h in c.obj["status"]["schedule"]["history"]] == [1]


def test_suspend_and_a_missed_deadline_start_nothing():
    c = _scheduled(suspend=True)
    assert not _at(c, T0 + timedelta(hours=3)).create and "nextScheduleTime" not in c.obj["status"]["schedule"]
    c.edit(schedule={"cron": "0 * * * *", "suspend": False})
    assert not _at(c, T0 + timedelta(hours=3, minutes=1)).create  # fires while suspended were dropped
    c = _scheduled(startingDeadlineSeconds=60)
    d = _at(c, T0 + timedelta(hours=1, minutes=5))  # the operator was away at 01:00
    assert not d.create and c.obj["status"]["schedule"]["lastMissedTime"] == "2026-01-01T01:00:00Z"
    assert [e[:2] for e in c.events] == [("Warning", "MissedSchedule")]
    _at(c, T0 + timedelta(hours=1, minutes=6))
    assert [e[1] for e in c.events] == ["MissedSchedule"]  # once
    assert _stages(_at(c, T0 + timedelta(hours=2, seconds=20))) == ["prepare"]


def test_history_limits_keep_the_newest_runs_and_delete_the_jobs_of_the_others():
    c = _scheduled(successfulRunsHistoryLimit=1, failedRunsHistoryLimit=1)
    _at(c, T0 + timedelta(hours=1))
    _finish_run(c)
    jobs_of_first = c.obj["status"]["schedule"]["history"][0]["jobs"]
    assert len(jobs_of_first) == 2
    _at(c, T0 + timedelta(hours=2))
    c.set_job("prepare", job_failed)
    d = c.step()
    assert [h["result"] for h in c.obj["status"]["schedule"]["history"]] == ["Succeeded", "Failed"] and not d.delete
    _at(c, T0 + timedelta(hours=3))
    c.set_job("prepare", job_complete)
    c.step()
    c.set_job("sync", job_complete)
    d = c.step()
    assert [(h["run"], h["result"]) for h in c.obj["status"]["schedule"]["history"]] == [(2, "Failed"),
                                                                                         (3, "Succeeded")]
    assert sorted(d.delete) == sorted(jobs_of_first)


# --- cron ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("expression,after,expected", [
    ("0 3 * * *", T0, datetime(2026, 1, 1, 3, tzinfo=timezone.utc)),
    ("*/15 * * * *", T0 + timedelta(minutes=1), datetime(2026, 1, 1, 0, 15, tzinfo=timezone.utc)),
    ("0 0 * * mon", T0, datetime(2026, 1, 5, tzinfo=timezone.utc)),  # 2026-01-01 is a Thursday
    ("0 0 1,15 * 0", T0, datetime(2026, 1, 4, tzinfo=timezone.utc)),  # either day field matches
    ("@monthly", T0, datetime(2026, 2, 1, tzinfo=timezone.utc)),
    ("0 0 29 feb *", T0, datetime(2028, 2, 29, tzinfo=timezone.utc)),
    ("30 1-5/2 * JAN-Mar 7", T0, datetime(2026, 1, 4, 1, 30, tzinfo=timezone.utc)),
])
def test_cron_next_fire(expression, after, expected):
    assert next_after(parse(expression), after) == expected


def test_cron_latest_due_and_a_date_that_never_comes():
    assert latest_due(parse("* * * * *"), T0, T0 + timedelta(days=30)) == T0 + timedelta(days=30)
    assert latest_due(parse("0 0 1 1 *"), T0, T0 + timedelta(days=30)) is None
    assert next_after(parse("0 0 30 2 *"), T0) is None


@pytest.mark.parametrize("expression,needle", [
    ("* * * *", "needs 5 fields"), ("60 * * * *", "minute field: 60 is out of range 0-59"),
    ("* 24 * * *", "hour field"), ("* * 0 * *", "day of month field"), ("* * * 13 *", "month field"),
    ("* * * * 8", "day of week field"), ("5-1 * * * *", "goes backwards"), ("*/0 * * * *", "step"),
    ("* * * foo *", "'foo' is not a number or a name"),
])
def test_cron_errors_name_the_field(expression, needle):
    with pytest.raises(CronError, match=needle.replace("*", r"\*")):
        parse(expression)


# --- snapshots and restore -------------------------------------------------------------------------

def test_a_restore_builds_a_version_from_the_snapshot_and_publishes_it():
    obj = indexjob(mode="restore", restore={"from": "s3://mmsearch/snapshots/search/demo/20260101T000000Z"})
    for key in ("source", "model", "modality"):
        obj["spec"].pop(key)
    c = Cluster(obj)
    d = c.step()
    assert _stages(d) == ["restore"]
    args = d.create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--from") + 1] == "s3://mmsearch/snapshots/search/demo/20260101T000000Z"
    assert args[args.index("--version") + 1] == "v1_0f1e2d3c" == c.obj["status"]["version"]
    c.set_job("restore", job_complete)
    d = c.step()
    assert _stages(d) == ["publish"]
    args = d.create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--version") + 1] == "v1_0f1e2d3c"
    c.set_job("publish", job_complete)
    c.step()
    assert c.obj["status"]["phase"] == "Succeeded" and c.obj["status"]["published"]["collection"] == "stdlib_v1_0f1e2d3c"


def test_snapshots_on_request_and_on_a_cron_wait_for_a_running_stage_and_report_the_last_one():
    obj = indexjob(snapshots={"location": "s3://mmsearch/snapshots", "cron": "0 * * * *", "keep": 2})
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    c = Cluster(obj)
    c.clock = T0 - timedelta(seconds=10)
    c.run_all()  # the build: a fire comes while it runs? not before 01:00
    assert "state" not in c.obj["status"]["snapshots"]
    assert c.obj["status"]["snapshots"]["nextScheduleTime"] == "2026-01-01T01:00:00Z"
    c.edit(snapshots={**obj["spec"]["snapshots"], "request": 1})
    d = c.step()
    assert _stages(d) == ["snapshot"]
    container = d.create[0]["spec"]["template"]["spec"]["containers"][0]
    args = container["args"]
    assert container["command"] == ["mmsearch", "job", "snapshot"]
    assert args[args.index("--to") + 1].startswith("s3://mmsearch/snapshots/search/demo/2026")
    assert args[args.index("--keep") + 1] == "2"
    assert (_conditions(c)["Progressing"]["status"], _conditions(c)["Progressing"]["reason"]) == ("True",
                                                                                                  "TakingSnapshot")
    job = c.jobs[c.obj["status"]["snapshots"]["job"]]
    _finish_with(c, job, {"snapshot": args[args.index("--to") + 1], "collection": "stdlib_v1_0f1e2d3c",
                          "rows": 1200, "summaries": 1200, "parts": 4})
    c.step()
    last = c.obj["status"]["snapshots"]["last"]
    assert (last["collection"], last["rows"]) == ("stdlib_v1_0f1e2d3c", 1200)
    assert any(e[:2] == ("Normal", "SnapshotTaken") for e in c.events)
    # The 01:00 fire comes while a new build runs: the snapshot waits for it to end.
    c.edit(encode={"batchSize": 32})
    c.step()
    assert c.obj["status"]["phase"] == "Running"
    d = _at(c, T0 + timedelta(hours=1, minutes=1))
    assert "snapshot" not in _stages(d)
    c.run_all()
    snapshot_jobs = [j for j in c.jobs.values() if j["metadata"]["labels"]["mmsearch.io/stage"] == "snapshot"]
    assert len(snapshot_jobs) == 2 and c.obj["status"]["snapshots"]["lastFireTime"] == "2026-01-01T01:00:00Z"
    latest = c.jobs[c.obj["status"]["snapshots"]["job"]]
    assert latest["spec"]["template"]["spec"]["containers"][0]["args"][
        latest["spec"]["template"]["spec"]["containers"][0]["args"].index("--to") + 1].endswith("/20260101T010000Z")
    c.jobs[latest["metadata"]["name"]] = job_failed(latest, message="scene stdlib has no published version")
    c.step()
    degraded = _conditions(c)["Degraded"]
    assert (degraded["status"], degraded["reason"]) == ("True", "SnapshotFailed")
    assert any(e[:2] == ("Warning", "SnapshotFailed") for e in c.events)


def test_a_fire_waits_for_a_running_snapshot_whatever_the_policy():
    obj = indexjob(mode="incremental", schedule={"cron": "0 * * * *", "concurrencyPolicy": "Replace"},
                   snapshots={"location": "s3://mmsearch/snapshots"})
    obj["metadata"]["creationTimestamp"] = "2026-01-01T00:00:00Z"
    c = Cluster(obj)
    _at(c, T0 + timedelta(hours=1))
    _finish_run(c)
    c.edit(snapshots={"location": "s3://mmsearch/snapshots", "request": 1})
    assert _stages(c.step()) == ["snapshot"]
    d = _at(c, T0 + timedelta(hours=2))  # the snapshot still runs
    assert not d.create and not d.delete and c.obj["status"]["run"] == 1
    job = c.jobs[c.obj["status"]["snapshots"]["job"]]
    _finish_with(c, job, {"collection": "stdlib_v1", "rows": 10, "summaries": 10})
    c.step()  # the snapshot ends
    assert _stages(c.step()) == ["prepare"] and c.obj["status"]["run"] == 2  # then the kept fire starts
