"""The status machine over Job state sequences: success, retry then success, failure, operator
restart mid-stage, spec change mid-run, skipped stages, shard progress, invalid specs."""
from __future__ import annotations

import copy
from datetime import datetime, timedelta, timezone
from typing import Any, Callable

import pytest

from mmsearch.operator.spec import MODES
from mmsearch.operator.reconciler import Decision, count_indexes, reconcile, status_patch
import json

from tests.operator.helpers import finished_pod, indexjob, job_complete, job_failed, job_running, summary

T0 = datetime(2026, 1, 1, tzinfo=timezone.utc)
RUN = tuple(s for s in MODES["full"] if s != "evaluate")  # what an IndexJob without spec.evaluation runs


class Cluster:
    """The API server's and Job controller's part: stores the IndexJob and its Jobs, applies decisions."""

    def __init__(self, obj: dict[str, Any]):
        self.obj = obj
        self.jobs: dict[str, dict[str, Any]] = {}
        self.pods: dict[str, dict[str, Any]] = {}
        self.events: list[tuple[str, str, str]] = []
        self.deleted: list[str] = []
        self.clock = T0

    def step(self) -> Decision:
        self.clock += timedelta(seconds=10)
        d = reconcile(self.obj, list(self.jobs.values()), self.clock, list(self.pods.values()))
        for job in d.create:
            self.jobs.setdefault(job["metadata"]["name"], job)  # 409 on an existing name: nothing changes
        for name in d.delete:
            self.deleted.append(name)
            self.jobs.pop(name, None)
        self.events += [(e.type, e.reason, e.message) for e in d.events]
        patch = status_patch(self.obj.get("status"), d.status)
        self.obj["status"] = _merge(self.obj.get("status") or {}, patch)
        return d

    def edit(self, **spec: Any) -> None:
        self.obj["spec"].update(spec)
        self.obj["metadata"]["generation"] += 1

    def job_of(self, stage: str) -> dict[str, Any]:
        (job,) = [j for j in self.jobs.values() if j["metadata"]["labels"]["mmsearch.io/stage"] == stage
                  and j["metadata"]["name"] == self.entry(stage).get("job")]
        return job

    def entry(self, stage: str) -> dict[str, Any]:
        return next(e for e in self.obj["status"]["stages"] if e["name"] == stage)

    def set_job(self, stage: str, fn: Callable[[dict[str, Any]], dict[str, Any]], **kw: Any) -> None:
        job = self.job_of(stage)
        self.jobs[job["metadata"]["name"]] = fn(job, **kw)

    def run_all(self) -> None:
        """Complete each stage's Job as it appears until the IndexJob is finished."""
        for _ in range(20):
            self.step()
            status = self.obj["status"]
            if status["phase"] != "Running":
                return
            self.set_job(status["stage"], job_complete)
        raise AssertionError("did not finish")


def _merge(old: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(old)
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        elif isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def _states(c: Cluster) -> dict[str, str]:
    return {e["name"]: e["state"] for e in c.obj["status"]["stages"]}


def _conditions(c: Cluster) -> dict[str, dict[str, Any]]:
    return {x["type"]: x for x in c.obj["status"]["conditions"]}


def test_success_runs_every_stage_in_order_and_then_rests():
    c = Cluster(indexjob())
    order = []
    for _ in RUN:
        d = c.step()
        assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create] == [c.obj["status"]["stage"]]
        order.append(c.obj["status"]["stage"])
        assert c.obj["status"]["phase"] == "Running" and _conditions(c)["Progressing"]["status"] == "True"
        c.set_job(c.obj["status"]["stage"], job_complete)
    assert order == list(RUN)
    d = c.step()
    status = c.obj["status"]
    assert status["phase"] == "Succeeded" and "stage" not in status
    assert status["progress"] == "7/7" and status["version"] == "v1_0f1e2d3c" and status["observedGeneration"] == 1
    assert _states(c) == {**{s: "Succeeded" for s in RUN}, "evaluate": "Skipped"} and "evaluation" not in status
    assert _conditions(c)["Ready"] | {"lastTransitionTime": None} == {
        "type": "Ready", "status": "True", "reason": "Published", "message": "alias stdlib -> stdlib_v1_0f1e2d3c",
        "lastTransitionTime": None, "observedGeneration": 1}
    assert _conditions(c)["Degraded"]["status"] == "False" and _conditions(c)["Degraded"]["reason"] == "AsExpected"
    assert status["published"]["collection"] == "stdlib_v1_0f1e2d3c"  # no pod summary here: what the operator knows
    assert ("Normal", "Succeeded", "index stdlib_v1_0f1e2d3c ready") in c.events
    assert all(e["startTime"] and e["completionTime"] and e["progress"] == "1/1" for e in status["stages"]
               if e["state"] != "Skipped")
    # Level-triggered: reconciling again changes nothing and does nothing.
    before = copy.deepcopy(c.obj["status"])
    again = reconcile(c.obj, list(c.jobs.values()), c.clock + timedelta(hours=1))
    assert not again.create and not again.delete and not again.events
    assert status_patch(before, again.status) == {}


def test_publish_args_carry_the_version_push_milvus_built():
    c = Cluster(indexjob())
    c.run_all()
    push, publish = c.job_of("push-milvus"), c.job_of("publish")
    version = c.obj["status"]["version"]
    for job in (push, publish):
        args = job["spec"]["template"]["spec"]["containers"][0]["args"]
        assert args[args.index("--version") + 1] == version


def test_retry_then_success():
    c = Cluster(indexjob())
    c.step()
    c.set_job("prepare", job_running, failed=1)
    c.step()
    entry = c.entry("prepare")
    assert entry["state"] == "Running" and entry["retries"] == 1 and "retries" in entry["message"]
    assert c.obj["status"]["phase"] == "Running"
    c.set_job("prepare", job_complete, failed=1)
    c.step()
    assert c.entry("prepare")["state"] == "Succeeded" and "message" not in c.entry("prepare")
    assert c.obj["status"]["stage"] == "export"


def test_failure_marks_stage_and_indexjob_failed_with_the_jobs_reason_once():
    c = Cluster(indexjob())
    c.step()
    c.set_job("prepare", job_complete)
    c.step()
    c.set_job("export", job_failed, reason="DeadlineExceeded", message="Job was active longer than specified deadline")
    c.step()
    status = c.obj["status"]
    assert status["phase"] == "Failed" and status["stage"] == "export"
    assert "DeadlineExceeded: Job was active longer" in c.entry("export")["message"]
    assert _conditions(c)["Ready"]["reason"] == "StageFailed" and _conditions(c)["Progressing"]["status"] == "False"
    warnings = [e for e in c.events if e[0] == "Warning"]
    assert len(warnings) == 1 and warnings[0][1] == "StageFailed" and "DeadlineExceeded" in warnings[0][2]
    assert _states(c)["encode"] == "Pending"
    again = c.step()
    assert not again.create and not again.events and c.obj["status"]["phase"] == "Failed"


def test_retrying_a_failed_indexjob_reruns_from_the_failed_stage():
    c = Cluster(indexjob())
    c.step()
    c.set_job("prepare", job_complete)
    c.step()
    failed_job = c.entry("export")["job"]
    c.set_job("export", job_failed)
    c.step()
    prepare_job = c.entry("prepare")["job"]
    c.edit(retry=1)
    d = c.step()
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create] == ["export"]
    assert c.entry("export")["job"] != failed_job and c.entry("export")["generation"] == 2
    assert c.entry("prepare")["job"] == prepare_job and c.entry("prepare")["state"] == "Succeeded"
    c.set_job("export", job_complete)
    c.run_all()
    assert c.obj["status"]["phase"] == "Succeeded" and c.obj["status"]["version"] == "v2_0f1e2d3c"


def test_operator_restart_after_creating_a_job_but_before_writing_status():
    c = Cluster(indexjob())
    c.step()
    c.set_job("prepare", job_complete)
    saved = copy.deepcopy(c.obj["status"])
    d = c.step()  # creates export, then "dies" before its status write lands
    (export,) = d.create
    c.obj["status"] = saved
    c.jobs[export["metadata"]["name"]] = job_running(export)
    d2 = c.step()  # restarted operator
    assert d2.create == []  # the deterministic name finds the Job it created before dying
    assert c.entry("export")["job"] == export["metadata"]["name"] and c.entry("export")["state"] == "Running"
    assert len([j for j in c.jobs.values() if j["metadata"]["labels"]["mmsearch.io/stage"] == "export"]) == 1


def test_operator_restart_mid_stage_with_the_job_gone_recreates_it_under_the_same_name():
    c = Cluster(indexjob())
    c.step()
    name = c.entry("prepare")["job"]
    del c.jobs[name]  # e.g. deleted by hand while the operator was down
    d = c.step()
    assert [j["metadata"]["name"] for j in d.create] == [name]
    c.set_job("prepare", job_complete)
    c.step()
    assert c.entry("prepare")["state"] == "Succeeded"


def test_restart_with_everything_in_place_just_continues():
    c = Cluster(indexjob())
    c.step()
    c.set_job("prepare", job_running)
    d = c.step()
    assert d.create == [] and d.events == []
    c.set_job("prepare", job_complete)
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in c.step().create] == ["export"]


def test_spec_change_mid_run_keeps_unaffected_stages_and_reruns_from_the_first_affected():
    c = Cluster(indexjob())
    for stage in ("prepare", "export"):
        c.step()
        c.set_job(stage, job_complete)
    c.step()
    encode_job = c.entry("encode")["job"]
    c.set_job("encode", job_running)
    # Index settings only: encode keeps running, nothing is deleted.
    c.edit(milvus={"uri": "http://milvus:19530", "indexType": "HNSW"})
    d = c.step()
    assert d.delete == [] and d.create == []
    assert c.entry("encode")["job"] == encode_job and c.obj["status"]["observedGeneration"] == 2
    # The model: everything from prepare on is affected; the running encode is superseded.
    c.edit(model={"source": "other/model", "name": "minilm", "repository": "s3://mmsearch/models"})
    d = c.step()
    assert d.delete == [encode_job]
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create] == ["prepare"]
    assert c.entry("prepare")["generation"] == 3 and _states(c)["export"] == "Pending"
    c.run_all()
    assert c.obj["status"]["phase"] == "Succeeded" and c.obj["status"]["version"] == "v3_0f1e2d3c"


def test_spec_change_after_success_reruns_only_what_it_affects():
    c = Cluster(indexjob())
    c.run_all()
    jobs_before = {e["name"]: e.get("job") for e in c.obj["status"]["stages"]}
    c.edit(mongo={"uriSecret": {"name": "mongo", "key": "uri"}, "collection": "renamed"})
    created = []
    for _ in range(5):
        d = c.step()
        created += [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create]
        if c.obj["status"]["phase"] != "Running":
            break
        c.set_job(c.obj["status"]["stage"], job_complete)
    assert created == ["push-mongo", "publish"] and c.obj["status"]["phase"] == "Succeeded"
    after = {e["name"]: e.get("job") for e in c.obj["status"]["stages"]}
    assert {s for s in RUN if after[s] != jobs_before[s]} == {"push-mongo", "publish"}
    assert c.obj["status"]["version"] == "v1_0f1e2d3c"  # push-milvus did not re-run: same collection


def test_an_edit_that_changes_no_inputs_keeps_a_finished_run():
    c = Cluster(indexjob())
    c.run_all()
    c.edit(image="ghcr.io/mmsearch/mmsearch:0.1.1")
    d = c.step()
    assert not d.create and c.obj["status"]["phase"] == "Succeeded" and c.obj["status"]["observedGeneration"] == 2


def test_skipped_stages():
    c = Cluster(indexjob(skipStages=["export"], publish={"enabled": False}))
    c.run_all()
    assert _states(c) == {"prepare": "Succeeded", "export": "Skipped", "encode": "Succeeded",
                          "push-milvus": "Succeeded", "push-mongo": "Succeeded", "evaluate": "Skipped",
                          "publish": "Skipped"}
    assert c.obj["status"]["phase"] == "Succeeded" and _conditions(c)["Ready"]["reason"] == "Built"
    assert not any(j["metadata"]["labels"]["mmsearch.io/stage"] in ("export", "publish") for j in c.jobs.values())


def test_publishing_without_push_milvus_on_a_first_run_fails_naming_the_field():
    c = Cluster(indexjob(skipStages=["prepare", "export", "encode", "push-milvus", "push-mongo"]))
    c.step()
    assert c.obj["status"]["phase"] == "Failed"
    assert c.entry("publish")["message"].startswith("spec.skipStages:")


EVALUATION = {"queries": "s3://mmsearch/queries.jsonl", "k": 10, "minRecall": 0.8, "maxRegression": 0.05,
              "force": False}


def _to_evaluate(c: Cluster) -> None:
    for _ in range(6):
        c.step()
        if c.obj["status"]["stage"] == "evaluate":
            return
        c.set_job(c.obj["status"]["stage"], job_complete)
    raise AssertionError("evaluate never ran")


def _evaluated(c: Cluster, message: str) -> Decision:
    job = c.job_of("evaluate")
    c.pods[job["metadata"]["name"]] = finished_pod(job, message)
    c.set_job("evaluate", job_complete)
    return c.step()


def test_a_candidate_below_the_gate_fails_with_quality_gate_and_an_event_with_the_numbers():
    c = Cluster(indexjob(evaluation=EVALUATION))
    _to_evaluate(c)
    args = c.job_of("evaluate")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--collection") + 1] == "stdlib_v1_0f1e2d3c" and args[args.index("--compare") + 1] == "stdlib"
    d = _evaluated(c, json.dumps(summary(0.62, compared_recall=0.9)))
    status = c.obj["status"]
    assert status["phase"] == "Failed" and status["stage"] == "publish" and not d.create
    assert _states(c)["evaluate"] == "Succeeded" and c.entry("publish")["reason"] == "QualityGate"
    assert status["evaluation"]["recall"] == 0.62 and status["evaluation"]["compared"] == "stdlib_v0_old"
    ready = _conditions(c)["Ready"]
    assert ready["reason"] == "QualityGate"
    (event,) = [e for e in c.events if e[1] == "QualityGate"]
    assert event[0] == "Warning"
    assert "recall@10 0.6200 < spec.evaluation.minRecall 0.8" in event[2]
    assert "recall@10 regression 0.2800 against stdlib_v0_old (0.9000 -> 0.6200) > spec.evaluation.maxRegression 0.05" \
        in event[2]
    assert not any(j["metadata"]["labels"]["mmsearch.io/stage"] == "publish" for j in c.jobs.values())
    c.step()  # level-triggered: no second event, no Job
    assert [e for e in c.events if e[1] == "QualityGate"] == [event] and "publish" not in [
        j["metadata"]["labels"]["mmsearch.io/stage"] for j in c.jobs.values()]
    # Forcing it (a spec edit) publishes, with --force, without re-running anything else.
    c.edit(evaluation={**EVALUATION, "force": True})
    d = c.step()
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create] == ["publish"]
    args = d.create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[-1] == "--force" and "--report" in args and args[args.index("--min-recall") + 1] == "0.8"


def test_a_candidate_that_passes_is_published_with_its_report():
    c = Cluster(indexjob(evaluation=EVALUATION))
    _to_evaluate(c)
    d = _evaluated(c, json.dumps(summary(0.88, compared_recall=0.9)))
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create] == ["publish"]
    args = d.create[0]["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--report") + 1].endswith("/evaluation/stdlib_v1_0f1e2d3c.json") and "--force" not in args
    c.set_job("publish", job_complete)
    c.step()
    assert c.obj["status"]["phase"] == "Succeeded" and c.obj["status"]["evaluation"]["recall"] == 0.88
    first = summary(0.7, compared=None)  # a first version: nothing published to regress against
    c2 = Cluster(indexjob("first", evaluation=EVALUATION | {"minRecall": 0.5}))
    _to_evaluate(c2)
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in _evaluated(c2, json.dumps(first)).create] == ["publish"]


def test_an_evaluate_job_without_a_summary_fails_its_stage():
    c = Cluster(indexjob(evaluation=EVALUATION))
    _to_evaluate(c)
    _evaluated(c, "Traceback (most recent call last): ...")
    assert c.obj["status"]["phase"] == "Failed" and c.obj["status"]["stage"] == "evaluate"
    assert "left no evaluation summary" in c.entry("evaluate")["message"]


def test_an_incremental_indexjob_runs_prepare_then_sync_only():
    c = Cluster(indexjob(mode="incremental", mongo={"uriSecret": {"name": "mongo", "key": "uri"},
                                                    "collection": "{collection}"}))
    created = []
    for _ in range(4):
        d = c.step()
        created += [j["metadata"]["labels"]["mmsearch.io/stage"] for j in d.create]
        if c.obj["status"]["phase"] != "Running":
            break
        c.set_job(c.obj["status"]["stage"], job_complete)
    assert created == ["prepare", "sync"] and _states(c) == {"prepare": "Succeeded", "sync": "Succeeded"}
    status = c.obj["status"]
    assert status["phase"] == "Succeeded" and status["progress"] == "2/2"
    assert _conditions(c)["Ready"]["reason"] == "Synced"
    args = c.job_of("sync")["spec"]["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--collection") + 1] == "{collection}" and "--version" not in args
    assert ("Normal", "Succeeded", "the live version of scene stdlib synced") in c.events


def test_encode_shard_completions_are_progress():
    c = Cluster(indexjob(encode={"shards": 4}))
    for stage in ("prepare", "export"):
        c.step()
        c.set_job(stage, job_complete)
    c.step()
    assert c.entry("encode")["progress"] == "0/4"
    c.set_job("encode", job_running, completed_indexes="0,2")
    c.step()
    assert c.entry("encode")["progress"] == "2/4" and c.entry("encode")["done"] == 2
    assert c.obj["status"]["progress"] == "3/7 encode 2/4"  # prepare, export, and evaluate skipped
    c.set_job("encode", job_complete)
    c.step()
    assert c.entry("encode")["progress"] == "4/4" and c.obj["status"]["stage"] == "push-milvus"


def test_invalid_spec_fails_with_a_message_naming_the_field_and_one_event():
    c = Cluster(indexjob(source={"kind": "images", "uri": "s3://x/y"}))  # modality text
    d = c.step()
    assert d.create == []
    status = c.obj["status"]
    assert status["phase"] == "Failed"
    assert _conditions(c)["Ready"]["reason"] == "InvalidSpec"
    assert "spec.source.kind: 'images' corpora need spec.modality 'image'" in _conditions(c)["Ready"]["message"]
    assert [e[1] for e in c.events] == ["InvalidSpec"]
    c.step()
    assert [e[1] for e in c.events] == ["InvalidSpec"]
    c.edit(source={"kind": "stdlib"})
    d = c.step()
    assert c.obj["status"]["phase"] == "Running" and [j["metadata"]["labels"]["mmsearch.io/stage"]
                                                       for j in d.create] == ["prepare"]


@pytest.mark.parametrize("ranges,n", [("", 0), ("0", 1), ("0-2,5", 4), ("1,3-4,7-9", 6)])
def test_count_indexes(ranges, n):
    assert count_indexes(ranges) == n


def test_status_patch_nulls_removed_keys_and_replaces_lists():
    assert status_patch({"a": 1, "b": {"c": 2, "d": 3}, "l": [1]}, {"a": 1, "b": {"c": 2}, "l": [2], "e": None}) == {
        "b": {"d": None}, "l": [2]}
    assert status_patch(None, {"phase": "Running", "stage": None}) == {"phase": "Running"}
