"""End to end: a T2T IndexJob applied to the emulated cluster; the test is the kubelet and the Job
controller: it runs each created Job's container command (command, args and env exactly as the
manifest says, secrets resolved from the cluster's Secret) on this machine, and reports the exit
code back as the Job's status. The run must end Succeeded, with the alias published and a search
finding the expected document. Local stand-ins: the workdir and model repository are paths under
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


async def _execute(cluster, job: dict[str, Any]) -> None:
    """Run every pod of ``job`` (one per completion index) and report the outcome as its status."""
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["command"][:2] == ["mmsearch", "job"]
    env = await _container_env(cluster, container)

    async def run_pod(index: int) -> tuple[int, str]:
        if job["spec"].get("completionMode") == "Indexed":
            env["JOB_COMPLETION_INDEX"] = str(index)
        return await _run_pod(container["command"] + container["args"], env)

    await cluster.complete_job(job, run_pod)


async def _next_job_or_outcome(cluster, seen: set[str], name: str):
    async def probe():
        status = (await cluster.indexjob(name)).get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return ("done", status)
        new = [j for j in await cluster.jobs() if j["metadata"]["name"] not in seen]
        return ("job", new[0]) if new else None
    return await cluster.wait_for("a new Job or the end of the run", probe)


async def _run_indexjob(cluster, obj: dict, mongo_uri: str) -> tuple[dict, list[str]]:
    """Apply ``obj`` and run each Job the operator creates until the IndexJob ends: (status, stages run)."""
    await cluster.create_secret("mongo", {"uri": mongo_uri})
    await cluster.apply(obj)
    seen: set[str] = set()
    ran: list[str] = []
    while True:
        kind, value = await _next_job_or_outcome(cluster, seen, obj["metadata"]["name"])
        if kind == "done":
            return value, ran
        seen.add(value["metadata"]["name"])
        ran.append(value["metadata"]["labels"]["mmsearch.io/stage"])
        await _execute(cluster, value)


async def test_a_t2t_indexjob_runs_its_real_stages_to_a_searchable_published_index(
        tmp_path_factory, minilm_repo, mongo_server):
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("indexjob-e2e")
    milvus = root / "milvus.db"
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
        },
    }
    async with emulated_cluster() as cluster, running_operator(cluster):
        status, ran = await _run_indexjob(cluster, obj, mongo_server)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        assert ran == ["prepare", "encode", "push-milvus", "push-mongo", "publish"]
        encode = next(e for e in status["stages"] if e["name"] == "encode")
        assert encode["progress"] == "2/2"
        workdir = next(j for j in await cluster.jobs()
                       if j["metadata"]["labels"]["mmsearch.io/stage"] == "prepare")["spec"]["template"]["spec"][
            "containers"][0]["args"][1]

    version = status["version"]
    records = [json.loads(line) for line in Path(workdir, "corpus.jsonl").read_text().splitlines() if line.strip()]
    target = next(r for r in records if "json.dumps" in r["question"] or "dumps" in r["question"])

    from mmsearch.core import milvus_store
    from jobs.encode import TextInputs, load_encoder

    encoder = load_encoder(str(minilm_repo), "minilm", device="cpu")
    ids, mask = TextInputs(encoder, "question").tokenizer.encode([target["question"]])
    vector = encoder.run({"input_ids": ids, "attention_mask": mask})[0].tolist()
    client = milvus_store.connect(str(milvus))
    try:
        assert milvus_store.alias_target(client, SCENE) == f"{SCENE}_{version}"
        collection = milvus_store.resolve_collection(client, SCENE)
        hits = client.search(collection_name=collection, data=[vector], limit=3, output_fields=["id"])[0]
    finally:
        milvus_store.close(client, str(milvus))
    assert hits[0]["id"] == target["id"]

    import pymongo

    with pymongo.MongoClient(mongo_server, serverSelectionTimeoutMS=10000) as mongo:
        doc = mongo["mmsearch"][SCENE].find_one({"_id": target["id"]})
    assert doc is not None and doc["question"] == target["question"]


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
        status, ran = await _run_indexjob(cluster, obj, mongo_server)
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
