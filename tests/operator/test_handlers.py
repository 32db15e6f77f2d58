"""The operator for real: kopf with our handlers against kmock's Kubernetes emulator over HTTP; the
test plays the Job controller (no kube-apiserver installs) and asserts the IndexJob's status."""
from __future__ import annotations

import aiohttp
import kubernetes_validate
import pytest

import json

from mmsearch.operator.spec import MODES
from mmsearch.dev.processes import free_port
from tests.operator.cluster import emulated_cluster, running_operator
from tests.operator.helpers import K8S_VERSION, finished_pod, indexjob, job_complete, job_failed, job_running, \
    schema_errors, summary

RUN = tuple(s for s in MODES["full"] if s != "evaluate")  # an IndexJob without spec.evaluation

pytestmark = pytest.mark.timeout(120)


def _new(name="demo", **spec):
    obj = indexjob(name, **spec)
    for key in ("uid", "generation", "namespace"):
        obj["metadata"].pop(key)
    return obj


async def test_an_indexjob_runs_stage_by_stage_to_success_and_the_liveness_endpoint_answers():
    port = free_port()
    async with emulated_cluster() as cluster, running_operator(cluster, liveness_port=port):
        await cluster.apply(_new(encode={"shards": 2}))
        for stage in RUN:
            job = await cluster.wait_job(stage)
            kubernetes_validate.validate(job, K8S_VERSION, strict=True)
            assert job["metadata"]["ownerReferences"][0]["uid"] == (await cluster.indexjob("demo"))["metadata"]["uid"]
            status = await cluster.wait_status("demo", lambda s, st=stage: s.get("stage") == st)
            assert status["phase"] == "Running"
            if stage == "encode":
                await cluster.set_job_status(job, job_running, completed_indexes="1")
                status = await cluster.wait_status("demo", lambda s: "encode 1/2" in s.get("progress", ""))
                assert next(e for e in status["stages"] if e["name"] == "encode")["progress"] == "1/2"
            await cluster.set_job_status(job, job_complete)
        status = await cluster.wait_status("demo", lambda s: s.get("phase") == "Succeeded")
        assert status["progress"] == "7/7" and status["observedGeneration"] == 1
        assert {c["type"]: c["status"] for c in status["conditions"]} == {"Ready": "True", "Progressing": "False",
                                                                         "Degraded": "False"}
        assert schema_errors(await cluster.indexjob("demo")) == []  # the status fits the CRD's schema
        assert len(await cluster.jobs()) == len(RUN)  # one Job per stage, no duplicates
        reasons = await cluster.wait_for("the Succeeded event", lambda: _reasons(cluster))
        assert "Succeeded" in reasons
        async with aiohttp.ClientSession() as s, s.get(f"http://127.0.0.1:{port}/healthz") as resp:
            assert resp.status == 200


async def _reasons(cluster):
    reasons = [e.get("reason") for e in await cluster.events()]
    return reasons if "Succeeded" in reasons or "StageFailed" in reasons else None


async def test_retry_then_failure_marks_the_indexjob_failed_with_the_jobs_reason_and_an_event():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.apply(_new())
        job = await cluster.wait_job("prepare")
        await cluster.set_job_status(job, job_running, failed=1)
        status = await cluster.wait_status("demo", lambda s: s.get("stages", [{}])[0].get("retries") == 1)
        assert status["phase"] == "Running"
        await cluster.set_job_status(job, job_failed, reason="BackoffLimitExceeded",
                                     message="Job has reached the specified backoff limit")
        status = await cluster.wait_status("demo", lambda s: s.get("phase") == "Failed")
        assert status["stage"] == "prepare"
        assert "BackoffLimitExceeded" in status["stages"][0]["message"]
        events = await cluster.wait_for("the StageFailed event", lambda: _failed_events(cluster))
        assert events[0]["type"] == "Warning" and "BackoffLimitExceeded" in events[0]["message"]
        assert events[0]["involvedObject"]["name"] == "demo"
        assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in await cluster.jobs()] == ["prepare"]


async def _failed_events(cluster):
    return [e for e in await cluster.events() if e.get("reason") == "StageFailed"] or None


async def test_operator_restart_mid_stage_picks_up_where_things_stand():
    async with emulated_cluster() as cluster:
        async with running_operator(cluster):
            await cluster.apply(_new())
            prepare = await cluster.wait_job("prepare")
            await cluster.wait_status("demo", lambda s: s.get("stage") == "prepare")
        # The operator is down while the Job finishes.
        await cluster.set_job_status(prepare, job_complete)
        async with running_operator(cluster):
            export = await cluster.wait_job("export")
            status = await cluster.wait_status("demo", lambda s: s.get("stage") == "export")
            assert status["stages"][0]["state"] == "Succeeded"
            assert status["stages"][1]["job"] == export["metadata"]["name"]
        # And once more, restarted with a stage running: nothing is created twice.
        async with running_operator(cluster):
            await cluster.set_job_status(export, job_complete)
            await cluster.wait_job("encode")
            await cluster.wait_status("demo", lambda s: s.get("stage") == "encode")
        names = [j["metadata"]["name"] for j in await cluster.jobs()]
        assert len(names) == len(set(names)) == 3


async def test_spec_change_mid_run_reruns_from_the_first_affected_stage():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.apply(_new())
        for stage in ("prepare", "export"):
            await cluster.set_job_status(await cluster.wait_job(stage), job_complete)
        encode = await cluster.wait_job("encode")
        first_prepare = (await cluster.wait_status("demo", lambda s: s.get("stage") == "encode"))["stages"][0]["job"]
        await cluster.edit_spec("demo", encode={"batchSize": 16})
        status = await cluster.wait_status("demo", lambda s: s.get("observedGeneration") == 2)
        assert status["stage"] == "prepare"  # the workdir changed with the encode settings
        prepare2 = await cluster.wait_job("prepare", exclude={first_prepare})
        assert prepare2["metadata"]["labels"]["mmsearch.io/generation"] == "2"
        await cluster.wait_for("the superseded encode Job to go",
                               lambda: _gone(cluster, encode["metadata"]["name"]))
        export_job = status["stages"][1]["job"]
        assert status["stages"][1]["state"] == "Succeeded"  # the model did not change: export is kept
        await cluster.set_job_status(prepare2, job_complete)
        await cluster.wait_status("demo", lambda s: s.get("stage") == "encode")
        assert (await cluster.indexjob("demo"))["status"]["stages"][1]["job"] == export_job


async def _gone(cluster, name):
    return name not in {j["metadata"]["name"] for j in await cluster.jobs()}


async def test_an_indexjob_the_schema_accepts_but_cannot_run_is_failed_naming_the_field():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.apply(_new(workdir="/data/work"))  # a local path, but no shared volume
        status = await cluster.wait_status("demo", lambda s: s.get("phase") == "Failed")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "InvalidSpec" and ready["message"].startswith("spec.workdir: '/data/work'")
        assert await cluster.jobs() == []
        events = await cluster.wait_for("the InvalidSpec event", lambda: _events_with(cluster, "InvalidSpec"))
        assert "spec.workdir" in events[0]["message"]


async def _events_with(cluster, reason):
    return [e for e in await cluster.events() if e.get("reason") == reason] or None


async def _through(cluster, stages):
    for stage in stages:
        await cluster.set_job_status(await cluster.wait_job(stage), job_complete)


async def test_an_evaluation_below_the_gate_fails_the_indexjob_with_quality_gate_and_an_event():
    evaluation = {"queries": "s3://mmsearch/queries.jsonl", "minRecall": 0.8}
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.apply(_new(evaluation=evaluation))
        await _through(cluster, ("prepare", "export", "encode", "push-milvus", "push-mongo"))
        job = await cluster.wait_job("evaluate")
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        await cluster.create_pod(finished_pod(job, json.dumps(summary(0.55, compared_recall=0.91))))
        await cluster.set_job_status(job, job_complete)
        status = await cluster.wait_status("demo", lambda s: s.get("phase") == "Failed")
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert status["stage"] == "publish" and ready["reason"] == "QualityGate"
        assert status["evaluation"]["recall"] == 0.55 and status["evaluation"]["regression"] == pytest.approx(0.36)
        events = await cluster.wait_for("the QualityGate event", lambda: _events_with(cluster, "QualityGate"))
        assert events[0]["type"] == "Warning" and events[0]["involvedObject"]["name"] == "demo"
        assert "recall@10 0.5500 < spec.evaluation.minRecall 0.8" in events[0]["message"]
        assert "regression 0.3600" in events[0]["message"] and "not published" in events[0]["message"]
        assert "publish" not in [j["metadata"]["labels"]["mmsearch.io/stage"] for j in await cluster.jobs()]
        assert schema_errors(await cluster.indexjob("demo")) == []  # the status fits the CRD's schema


async def test_an_incremental_indexjob_runs_sync_on_the_live_version_only():
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.apply(_new(mode="incremental"))
        await _through(cluster, ("prepare", "sync"))
        status = await cluster.wait_status("demo", lambda s: s.get("phase") == "Succeeded")
        assert [e["name"] for e in status["stages"]] == ["prepare", "sync"]
        assert sorted(j["metadata"]["labels"]["mmsearch.io/stage"] for j in await cluster.jobs()) == ["prepare", "sync"]
        sync = await cluster.wait_job("sync")
        kubernetes_validate.validate(sync, K8S_VERSION, strict=True)
        assert sync["spec"]["template"]["spec"]["containers"][0]["command"] == ["mmsearch", "job", "sync"]
        ready = next(c for c in status["conditions"] if c["type"] == "Ready")
        assert ready["reason"] == "Synced"
