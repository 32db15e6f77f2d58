"""End to end: a T2T IndexJob applied to the emulated cluster; the test is the kubelet and the Job
controller: it runs each created Job's container command (command, args and env exactly as the
manifest says, secrets resolved from the cluster's Secret) on this machine, and reports the exit
code back as the Job's status (and, for evaluate, the termination message it wrote, as a finished
pod: the kubelet mounts the container's terminationMessagePath from a file of its own). The run must
end Succeeded, gated on its evaluation, with the alias published and a search finding the expected
document; the same IndexJob switched to ``mode: incremental`` on a larger source then syncs the live
version in place. Local stand-ins: the workdir and model repository are paths under
the IndexJob's volume mountPath (here pytest's base temp folder), Milvus is a Milvus Lite file and
MongoDB a real secantusd. Export is skipped: the session's ``minilm_repo`` fixture ran that stage's
code already (the export area tests it), and a second torch export would double the runtime."""
from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.operator.cluster import emulated_cluster, running_operator
from tests.operator.helpers import finished_pod

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]
NAME, SCENE = "stdlib-e2e", "stdlib_e2e"
STAGE_TIMEOUT = 240.0


async def _container_env(cluster, container: dict[str, Any]) -> dict[str, str]:
    """What the kubelet would give the container: plain values and secretKeyRefs, $(VAR) expanded."""
    env = dict(os.environ)  # HF_HUB_OFFLINE and the venv: this machine's "image"
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    for var in container.get("env") or []:
        if "value" in var:
            env[var["name"]] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), var["value"])
        else:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = await cluster.secret_value(ref["name"], ref["key"])
    return env


async def _run_pod(command: list[str], env: dict[str, str]) -> tuple[int, str]:
    executable = shutil.which(command[0], path=env["PATH"])
    assert executable, f"{command[0]} is not installed in this environment"
    proc = await asyncio.create_subprocess_exec(executable, *command[1:], env=env,
                                                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), STAGE_TIMEOUT)
    return proc.returncode, (err or out).decode(errors="replace").strip()


async def _execute(cluster, job: dict[str, Any], scratch: Path) -> None:
    """Run every pod of ``job`` (one per completion index) and report the outcome as its status."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["mmsearch", "job"]
    env = await _container_env(cluster, container)
    args = list(container["args"])
    message = container.get("terminationMessagePath")
    local = scratch / f"{job['metadata']['name']}.termination-log"
    if message:  # the kubelet's part: that path is a file it reads back into the pod's status
        args = [str(local) if a == message else a for a in args]

    async def run_pod(index: int) -> tuple[int, str]:
        if job["spec"].get("completionMode") == "Indexed":
            env["JOB_COMPLETION_INDEX"] = str(index)
        code, output = await _run_pod(container["command"] + args, env)
        if message:
            await cluster.create_pod(finished_pod(job, local.read_text() if local.is_file() else output,
                                                  exit_code=code))
        return code, output

    await cluster.complete_job(job, run_pod)


async def _next_job_or_outcome(cluster, seen: set[str], name: str):
    async def probe():
        status = (await cluster.indexjob(name)).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return ("done", status)
        new = [j for j in await cluster.jobs() if j["metadata"]["name"] not in seen]
        return ("job", new[0]) if new else None
    return await cluster.wait_for("a new Job or the end of the run", probe)


async def _run_indexjob(cluster, obj: dict, mongo_uri: str, scratch: Path) -> tuple[dict, list[str]]:
    """Apply ``obj`` and run each Job the operator creates until the IndexJob ends: (status, stages run)."""
    await cluster.create_secret("mongo", {"uri": mongo_uri})
    await cluster.apply(obj)
    return await _run_jobs(cluster, obj["metadata"]["name"], set(), scratch)


async def _run_jobs(cluster, name: str, seen: set[str], scratch: Path) -> tuple[dict, list[str]]:
    ran: list[str] = []
    while True:
        kind, value = await _next_job_or_outcome(cluster, seen, name)
        if kind == "done":
            return value, ran
        seen.add(value["metadata"]["name"])
        ran.append(value["metadata"]["labels"]["mmsearch.io/stage"])
        await _execute(cluster, value, scratch)


async def test_a_t2t_indexjob_runs_its_real_stages_to_a_searchable_published_index(
        tmp_path_factory, minilm_repo, mongo_server):
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("indexjob-e2e")
    milvus = root / "milvus.db"
    queries = root / "queries.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in [
        {"query": "json.dumps", "relevant": {"question": "json.dumps"}},
        {"query": "csv.writer", "relevant": {"question": "csv.writer"}},
        {"query": "json.JSONDecoder.decode", "relevant": {"question": "json.decoder.JSONDecoder.decode"}}]))
    obj = {
        "apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "metadata": {"name": NAME},
        "spec": {
            "scene": SCENE, "modality": "text", "image": "local-venv",
            "workdir": str(root / "work"), "volume": {"claimName": "local", "mountPath": str(base)},
            "source": {"kind": "stdlib", "uri": "json,csv"},
            "model": {"source": "sentence-transformers/all-MiniLM-L6-v2", "name": "minilm",
                      "repository": str(minilm_repo)},
            "encode": {"shards": 2, "batchSize": 32},
            "milvus": {"uri": str(milvus)},
            "mongo": {"uriSecret": {"name": "mongo"}, "collection": SCENE},
            "skipStages": ["export"],
            "evaluation": {"queries": str(queries), "k": 3, "minRecall": 0.6},
        },
    }
    async with emulated_cluster() as cluster, running_operator(cluster):
        status, ran = await _run_indexjob(cluster, obj, mongo_server, root)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        assert ran == ["prepare", "encode", "push-milvus", "push-mongo", "evaluate", "publish"]
        assert status["evaluation"]["queries"] == 3 and status["evaluation"]["recall"] >= 0.6
        assert "compared" not in status["evaluation"]  # nothing was published before: no baseline
        encode = next(e for e in status["stages"] if e["name"] == "encode")
        assert encode["progress"] == "2/2"
        workdir = next(j for j in await cluster.jobs()
                       if j["metadata"]["labels"]["mmsearch.io/stage"] == "prepare")["spec"]["template"]["spec"][
            "containers"][0]["args"][1]

    version = status["version"]
    records = [json.loads(line) for line in Path(workdir, "corpus.jsonl").read_text().splitlines() if line.strip()]
    target = next(r for r in records if "json.dumps" in r["question"] or "dumps" in r["question"])

    from mmsearch.core.milvus.connection import close, connect
    from mmsearch.core.milvus.registry import read_state, resolve_alias, resolve_collection
    from mmsearch.core.milvus.rows import count
    from mmsearch.jobs.encode import TextInputs, load_encoder

    encoder = load_encoder(str(minilm_repo), "minilm", device="cpu")
    ids, mask = TextInputs(encoder, "{question}").tokenizer.encode([target["question"]])
    vector = encoder.run({"input_ids": ids, "attention_mask": mask})[0].tolist()
    client = connect(str(milvus))
    try:
        assert resolve_alias(client, SCENE) == f"{SCENE}_{version}"
        collection = resolve_collection(client, SCENE)
        hits = client.search(collection_name=collection, data=[vector], limit=3, output_fields=["id"])[0]
    finally:
        close(client, str(milvus))
    assert hits[0]["id"] == target["id"]

    import pymongo

    with pymongo.MongoClient(mongo_server, serverSelectionTimeoutMS=10000) as mongo:
        doc = mongo["mmsearch"][SCENE].find_one({"_id": target["id"]})
    assert doc is not None and doc["question"] == target["question"]
    client = connect(str(milvus))
    try:
        recorded = read_state(client, f"{SCENE}_{version}")
    finally:
        close(client, str(milvus))
    assert recorded["evaluation"]["recall"] == status["evaluation"]["recall"]  # publish kept the report's figures

    # The same IndexJob, incremental, on a larger source: prepare and sync the live version in place.
    async with emulated_cluster() as cluster, running_operator(cluster):
        await cluster.create_secret("mongo", {"uri": mongo_server})
        incremental = json.loads(json.dumps(obj))
        incremental["spec"] |= {"mode": "incremental", "source": {"kind": "stdlib", "uri": "json,csv,base64"}}
        incremental["spec"].pop("evaluation")  # refused with mode incremental, which never evaluates
        incremental["spec"].pop("skipStages")  # so is a skip of export, a stage incremental never runs
        await cluster.apply(incremental)
        synced, ran = await _run_jobs(cluster, NAME, set(), root)
        assert synced["phase"] == "Succeeded" and ran == ["prepare", "sync"], json.dumps(synced, indent=1)
        workdir = next(j for j in await cluster.jobs() if j["metadata"]["labels"]["mmsearch.io/stage"] == "sync")[
            "spec"]["template"]["spec"]["containers"][0]["args"][1]
    records = [json.loads(line) for line in Path(workdir, "corpus.jsonl").read_text().splitlines() if line.strip()]
    client = connect(str(milvus))
    try:
        assert resolve_alias(client, SCENE) == f"{SCENE}_{version}"  # in place: same version
        assert count(client, f"{SCENE}_{version}") == len(records)
        assert read_state(client, f"{SCENE}_{version}")["generation"] == 1
    finally:
        close(client, str(milvus))


async def test_an_indexjob_with_model_version_2_is_served_by_the_embedded_encoder(
        tmp_path_factory, tiny_multilingual_source, mongo_server, service_loop):
    """``spec.model.version: 2``: export writes the tower under ``2/``, every later stage and serving's
    embedded encoder read that version from the manifest, and a search through serving succeeds."""
    import grpc

    from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
    from tests.support.stack import start_stack, t2t_config, write_config

    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("indexjob-v2")
    milvus, repo, scene = root / "milvus.db", root / "repo", "stdlib_v2"
    obj = {
        "apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "metadata": {"name": "stdlib-v2"},
        "spec": {
            "scene": scene, "modality": "text", "image": "local-venv",
            "workdir": str(root / "work"), "volume": {"claimName": "local", "mountPath": str(base)},
            "source": {"kind": "stdlib", "uri": "csv"},
            "model": {"source": str(tiny_multilingual_source), "name": "tiny", "repository": str(repo),
                      "version": 2},
            "encode": {"textField": "answer"},
            "milvus": {"uri": str(milvus)},
            "mongo": {"uriSecret": {"name": "mongo"}, "collection": scene},
        },
    }
    async with emulated_cluster() as cluster, running_operator(cluster):
        status, ran = await _run_indexjob(cluster, obj, mongo_server, root)
    assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
    assert ran == ["prepare", "export", "encode", "push-milvus", "push-mongo", "publish"]
    assert (repo / "tiny" / "2" / "model.onnx").is_file() and not (repo / "tiny" / "1").exists()

    experiments = root / "experiments.yaml"
    write_config(experiments, t2t_config(scene, model="tiny"))
    stack = start_stack(service_loop, models={"tiny": str(repo / "tiny")}, experiments=experiments,
                        milvus_uri=str(milvus), mongo_uri=mongo_server, model_repository=str(repo))
    try:
        with grpc.insecure_channel(stack.address) as channel:
            response = retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
                retrieval_pb2.SearchRequest(scene=scene, text="read a csv file", top_k=3), timeout=10)
    finally:
        stack.close()
    assert [item.summary["category"] for item in response.items] == ["csv"] * 3


async def test_a_model_change_builds_evaluates_against_the_live_version_and_publishes(
        tmp_path_factory, minilm_repo, tiny_multilingual_source, mongo_server):
    """``spec.model`` changed on an IndexJob whose scene is live: a full build with the new model (export,
    encode, push), evaluated against the live MiniLM version (each with its own tower from the one
    repository), then published past the gate; the alias points at the new model's version."""
    from mmsearch.core.milvus.connection import close, connect
    from mmsearch.core.milvus.record import read_manifest

    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("indexjob-migration")
    milvus, repo, scene = root / "milvus.db", root / "repo", "stdlib_migration"
    shutil.copytree(minilm_repo / "minilm", repo / "minilm")
    queries = root / "queries.jsonl"
    queries.write_text("".join(json.dumps(q) + "\n" for q in [
        {"query": "json.dumps", "relevant": {"question": "json.dumps"}},
        {"query": "csv.writer", "relevant": {"question": "csv.writer"}}]))
    obj = {
        "apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "metadata": {"name": "stdlib-migration"},
        "spec": {
            "scene": scene, "modality": "text", "image": "local-venv",
            "workdir": str(root / "work"), "volume": {"claimName": "local", "mountPath": str(base)},
            "source": {"kind": "stdlib", "uri": "json,csv"},
            "model": {"source": "sentence-transformers/all-MiniLM-L6-v2", "name": "minilm", "repository": str(repo)},
            "encode": {"textField": "answer"},
            "milvus": {"uri": str(milvus)},
            "mongo": {"uriSecret": {"name": "mongo"}, "collection": scene},
            "skipStages": ["export"],
            "evaluation": {"queries": str(queries), "k": 3, "minRecall": 0.0, "maxRegression": 1.0},
        },
    }
    async with emulated_cluster() as cluster, running_operator(cluster):
        first, _ = await _run_indexjob(cluster, obj, mongo_server, root)
        assert first["phase"] == "Succeeded", json.dumps(first, indent=1)
        seen = {j["metadata"]["name"] for j in await cluster.jobs()}
        await cluster.edit_spec("stdlib-migration", skipStages=[], model={
            "source": str(tiny_multilingual_source), "name": "tiny", "repository": str(repo)})
        await cluster.wait_status("stdlib-migration", lambda s: s.get("observedGeneration") == 2
                                  and s.get("phase") not in ("Succeeded", "Failed"))
        second, ran = await _run_jobs(cluster, "stdlib-migration", seen, root)
    assert second["phase"] == "Succeeded", json.dumps(second, indent=1)
    assert ran == ["prepare", "export", "encode", "push-milvus", "push-mongo", "evaluate", "publish"]
    assert second["version"] != first["version"]
    assert second["evaluation"]["compared"] == f"{scene}_{first['version']}"
    client = connect(str(milvus))
    try:
        live = read_manifest(client, scene)
    finally:
        close(client, str(milvus))
    assert (live["collection"], live["name"]) == (f"{scene}_{second['version']}", "tiny")
