"""The embedded MongoDB-wire launcher (mmsearch.dev.mongo) and the S3 workdir path of the stages."""
from __future__ import annotations

import json
import subprocess
import sys

import pymongo
import pytest

from mmsearch.jobs.errors import JobError
from mmsearch.jobs.corpus import read_corpus
from mmsearch.jobs.prepare import prepare
from mmsearch.core import artifacts
from mmsearch.dev.mongo import EmbeddedError, start_mongo
from tests.support.jobs import run_job


def test_start_mongo_on_an_ephemeral_port_keeps_data_across_restarts(tmp_path):
    log = tmp_path / "mongo.log"  # one log appended across restarts, as the demo keeps it
    with start_mongo(tmp_path / "data", timeout=60, log_path=log) as first:
        assert first.port > 0 and first.uri == f"mongodb://127.0.0.1:{first.port}"
        client = pymongo.MongoClient(first.uri)
        client.db.c.insert_one({"_id": 1, "v": "kept"})
        client.close()
        process = first.process
    assert process.poll() is not None  # stopped on exit
    with start_mongo(tmp_path / "data", timeout=60, log_path=log) as second:
        client = pymongo.MongoClient(second.uri)
        assert client.db.c.find_one({"_id": 1}) == {"_id": 1, "v": "kept"}
        client.close()


def test_start_mongo_reports_a_server_that_cannot_start(tmp_path):
    with start_mongo(timeout=60) as running:
        with pytest.raises(EmbeddedError, match="secantusd exited with code"):
            start_mongo(port=running.port, timeout=30, log_path=tmp_path / "second.log")


def test_stages_read_and_write_an_s3_workdir(s3_server, mongo_server):
    workdir = s3_server.uri("work", "stdlib")
    run_job("prepare", "--workdir", workdir, "--source-kind", "stdlib", "--source", "json")
    records = read_corpus(workdir).records
    assert {"json", "json.dumps"} <= {r["question"] for r in records}
    done = json.loads(run_job("push-mongo", "--workdir", workdir, "--mongo-uri", mongo_server,
                              "--collection", "s3_stdlib").stdout.strip().splitlines()[-1])
    assert done["documents"] == len(records)


def test_unreachable_s3_is_one_clear_line(tmp_path, s3_server):
    env = {"MMSEARCH_S3_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_MAX_ATTEMPTS": "1"}
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "prepare", "--workdir",
                             s3_server.uri("w"), "--source-kind", "stdlib", "--source", "csv"],
                            capture_output=True, text=True, timeout=120, env={**__import__("os").environ, **env})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith("error: cannot reach S3"), result.stderr
    with pytest.raises(JobError, match="no corpus at s3://"):
        read_corpus(s3_server.uri("missing"))
    prepare(s3_server.uri("ok"), "stdlib", "csv")
    assert artifacts.exists(s3_server.uri("ok", "corpus.jsonl"))
