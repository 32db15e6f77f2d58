"""sync on a T2I index (tiny CLIP): an image whose file changed under the same name is re-encoded, a new
one added, a removed one deleted; evaluate answers an image query through the collection's image tower.
The jobs run as processes on a Milvus Lite file; the checks read it afterwards."""
from __future__ import annotations

import json

import numpy as np
import pymongo
import pytest

from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.rows import count
from mmsearch.core.model_repository import ModelRepository
from mmsearch.core.query_tower import QueryTower
from tests.support.images import IMAGE_MODEL, distinct_images, write_images
from tests.support.indexes import read_records
from tests.support.jobs import run_job

pytestmark = pytest.mark.slow
SCENE = "photos"


def test_a_changed_image_file_is_re_encoded_and_image_queries_are_evaluated(tmp_path, tiny_clip_repo, mongo_server):
    images = distinct_images()
    folder = write_images(tmp_path / "photos", {k: v for k, v in images.items() if k != "brown-dots.png"})
    milvus, repo = str(tmp_path / "milvus.db"), str(tiny_clip_repo)
    run_job("prepare", "--workdir", str(tmp_path / "w1"), "--source-kind", "images", "--source", str(folder))
    run_job("encode", "--workdir", str(tmp_path / "w1"), "--repository", repo, "--model", IMAGE_MODEL)
    run_job("push-milvus", "--workdir", str(tmp_path / "w1"), "--milvus-uri", milvus, "--scene", SCENE,
            "--version", "1", "--repository", repo, "--model", IMAGE_MODEL)
    run_job("push-mongo", "--workdir", str(tmp_path / "w1"), "--mongo-uri", mongo_server, "--collection", "photos_1")
    run_job("publish", "--milvus-uri", milvus, "--scene", SCENE, "--version", "1")

    # The source changes: one file rewritten under its name, one removed, one added.
    images["red-square.png"] = images["brown-dots.png"]
    write_images(folder, {"red-square.png": images["red-square.png"], "brown-dots.png": images["brown-dots.png"]})
    (folder / "grey-noise.png").unlink()
    run_job("prepare", "--workdir", str(tmp_path / "w2"), "--source-kind", "images", "--source", str(folder))
    result = run_job("sync", "--workdir", str(tmp_path / "w2"), "--milvus-uri", milvus, "--mongo-uri", mongo_server,
                     "--scene", SCENE, "--repository", repo, "--model", IMAGE_MODEL, "--collection", "{collection}")
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["new"], summary["changed"], summary["removed"], summary["failed"]) == (1, 1, 1, 0)

    records = {r["name"]: r for r in read_records(tmp_path / "w2")}
    tower = QueryTower.load(ModelRepository(repo).folder(IMAGE_MODEL))
    expected = tower.image((folder / "red-square.png").read_bytes())
    client = connect(milvus)
    try:
        assert count(client, f"{SCENE}_1") == len(records) == 11
        (row,) = client.get(f"{SCENE}_1", ids=[records["red-square.png"]["id"]], output_fields=["vector"])
    finally:
        close(client, milvus)
    vector = np.asarray(row["vector"], dtype=np.float32)
    assert float(vector @ expected / np.linalg.norm(vector) / np.linalg.norm(expected)) > 0.999
    docs = pymongo.MongoClient(mongo_server).mmsearch["photos_1"]
    assert docs.count_documents({}) == 11 and docs.find_one({"name": "grey-noise.png"}) is None
    assert docs.find_one({"_id": records["red-square.png"]["id"]})["file_sha256"] == records["red-square.png"][
        "file_sha256"]

    queries = tmp_path / "queries.jsonl"
    queries.write_text(json.dumps({"image": "photos/brown-dots.png", "relevant": {"name": "brown-dots.png"}}) + "\n")
    result = run_job("evaluate", "--milvus-uri", milvus, "--collection", SCENE, "--queries", str(queries),
                     "--repository", repo, "--workdir", str(tmp_path / "w2"), "--k", "2")
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    # brown-dots and the rewritten red-square hold the same picture: both rank first; the label is found
    assert figures["recall"] == 1.0 and figures["mrr"] >= 0.5
    report = json.loads((tmp_path / "w2" / "evaluation" / "photos_1.json").read_text())
    assert report["towers"]["image"] == IMAGE_MODEL and report["queries"][0]["kind"] == "image"
