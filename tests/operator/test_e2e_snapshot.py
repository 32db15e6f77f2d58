"""End to end through the operator, each Job's command run on this machine (as tests/operator/test_e2e.py):
an IndexJob builds and publishes a small stdlib index; raising spec.snapshots.request runs the real
``mmsearch job snapshot``; an IndexJob in mode restore, pointed at an empty Milvus and an empty MongoDB
database, restores that snapshot and publishes it; the labelled queries get the same top 10 from both."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.operator.cluster import emulated_cluster, running_operator
from tests.operator.test_e2e import _execute, _run_indexjob, _run_jobs

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]
SCENE = "stdlib_snap"


def _tops(milvus: Path, queries: Path, repository: Path, workdir: Path) -> list[list[int]]:
    import shutil

    from mmsearch.jobs.evaluate import evaluate

    workdir.mkdir()
    (corpus,) = (workdir.parent / "work").rglob("corpus.jsonl")  # the build's: labels name its questions
    shutil.copy(corpus, workdir / "corpus.jsonl")
    evaluate(str(milvus), SCENE, str(queries), str(repository), str(workdir), k=10)
    report = json.loads(next((workdir / "evaluation").glob("*.json")).read_text())
    return [q["top"] for q in report["queries"]]


async def test_a_snapshot_taken_by_the_operator_restores_into_an_empty_cluster_with_the_same_answers(
        tmp_path_factory, minilm_repo, mongo_server):
    base = tmp_path_factory.getbasetemp()
    root = tmp_path_factory.mktemp("indexjob-snapshot")
    queries = root / "queries.jsonl"
    queries.write_text("".join(json.dumps({"query": q, "relevant": {"question": q}}) + "\n"
                               for q in ("json.dumps", "json.loads", "json.JSONEncoder", "json.JSONDecoder.decode")))
    common = {"scene": SCENE, "image": "local-venv", "workdir": str(root / "work"),
              "volume": {"claimName": "local", "mountPath": str(base)}}
    build = {"apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "metadata": {"name": "snap-build"},
             "spec": {**common, "modality": "text", "source": {"kind": "stdlib", "uri": "json"},
                      "model": {"source": "sentence-transformers/all-MiniLM-L6-v2", "name": "minilm",
                                "repository": str(minilm_repo)},
                      "milvus": {"uri": str(root / "milvus.db"), "bm25": {"fields": ["question", "answer"]}},
                      "mongo": {"uriSecret": {"name": "mongo"}, "collection": "{collection}"},
                      "skipStages": ["export"], "snapshots": {"location": str(root / "snapshots"), "keep": 1}}}
    async with emulated_cluster() as cluster, running_operator(cluster):
        status, _ = await _run_indexjob(cluster, build, mongo_server, root)
        assert status["phase"] == "Succeeded", json.dumps(status, indent=1)
        await cluster.edit_spec("snap-build", snapshots={**build["spec"]["snapshots"], "request": 1})
        job = await cluster.wait_job("snapshot")
        await _execute(cluster, job, root)
        taken = await cluster.wait_status("snap-build", lambda s: (s.get("snapshots") or {}).get("state")
                                          in ("Succeeded", "Failed"))
        assert taken["snapshots"]["state"] == "Succeeded", json.dumps(taken["snapshots"], indent=1)
        location = taken["snapshots"]["last"]["location"]
        assert taken["snapshots"]["last"]["collection"] == f"{SCENE}_{status['version']}"
        assert Path(location, "manifest.json").is_file()

        # An empty cluster: a new Milvus, another MongoDB database.
        restore = {"apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "metadata": {"name": "snap-restore"},
                   "spec": {**common, "mode": "restore", "restore": {"from": location},
                            "milvus": {"uri": str(root / "empty-milvus.db")},
                            "mongo": {"uriSecret": {"name": "mongo"}, "collection": "{collection}",
                                      "database": "restored"}}}
        earlier = {j["metadata"]["name"] for j in await cluster.jobs()}
        await cluster.apply(restore)
        restored, ran = await _run_jobs(cluster, "snap-restore", earlier, root)
        assert restored["phase"] == "Succeeded" and ran == ["restore", "publish"], json.dumps(restored, indent=1)
        assert restored["published"]["collection"] == f"{SCENE}_{restored['version']}"
        assert restored["published"]["documents"] == taken["snapshots"]["last"]["rows"]

    before = _tops(root / "milvus.db", queries, minilm_repo, root / "eval-before")
    after = _tops(root / "empty-milvus.db", queries, minilm_repo, root / "eval-after")
    assert len(before) == 4 and all(len(t) == 10 for t in before) and after == before
