"""push-mongo against a real MongoDB-wire server (secantusd): upserts, unique index, count check,
SIGKILL half-way + rerun, bad input."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pymongo
import pytest

from mmsearch.jobs.errors import JobError
from mmsearch.jobs.push_mongo import push_mongo
from tests.support.jobs import job_killed_after, run_job


def write_corpus(workdir: Path, n: int, start: int = 0) -> list[dict]:
    workdir.mkdir(parents=True, exist_ok=True)
    records = [{"id": 10**12 + i, "question": f"question {i}", "answer": "answer " * 20, "category": f"c{i % 7}"}
               for i in range(start, start + n)]
    (workdir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return records


@pytest.fixture()
def collection(mongo_server):
    name = f"t_{uuid.uuid4().hex[:8]}"
    client = pymongo.MongoClient(mongo_server)
    yield client["mmsearch"][name]
    client["mmsearch"].drop_collection(name)
    client.close()


def test_documents_keyed_by_id_with_a_unique_index(tmp_path, mongo_server, collection):
    records = write_corpus(tmp_path, 2345)
    summary = push_mongo(str(tmp_path), mongo_server, collection.name, batch_size=1000)
    assert summary == {"documents": 2345, "other": 0, "collection": f"mmsearch.{collection.name}"}
    assert collection.count_documents({}) == 2345  # the last partial batch (345) is there
    assert collection.find_one({"_id": records[-1]["id"]}) == {"_id": records[-1]["id"], **records[-1]}
    assert collection.index_information()["id_unique"]["unique"] is True
    with pytest.raises(pymongo.errors.DuplicateKeyError):
        collection.insert_one({"_id": "other", "id": records[0]["id"]})


def test_rerun_replaces_documents_and_keeps_others(tmp_path, mongo_server, collection):
    write_corpus(tmp_path, 50)
    push_mongo(str(tmp_path), mongo_server, collection.name)
    collection.insert_one({"_id": -1, "id": -1, "question": "from another corpus"})
    records = write_corpus(tmp_path, 50)
    records[0]["answer"] = "changed"
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    summary = push_mongo(str(tmp_path), mongo_server, collection.name, batch_size=7)
    assert summary["documents"] == 50 and summary["other"] == 1
    assert collection.find_one({"_id": records[0]["id"]})["answer"] == "changed"


def test_sigkill_half_way_then_rerun_is_exact(tmp_path, mongo_server, collection):
    records = write_corpus(tmp_path, 8000)
    args = ["push-mongo", "--workdir", str(tmp_path), "--mongo-uri", mongo_server,
            "--collection", collection.name, "--batch-size", "250"]
    killed = job_killed_after(2000, *args)  # after the 8th of 32 batches
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert collection.count_documents({}) == 8 * 250
    done = json.loads(run_job(*args).stdout.strip().splitlines()[-1])
    assert done["documents"] == len(records)
    assert collection.count_documents({}) == len(records)
    assert sorted(collection.distinct("id")) == [r["id"] for r in records]
    assert sorted(d["_id"] for d in collection.find({}, {"_id": 1})) == [r["id"] for r in records]


def test_api_errors(tmp_path, mongo_server):
    with pytest.raises(JobError, match="no corpus at"):
        push_mongo(str(tmp_path / "none"), mongo_server, "x")
    write_corpus(tmp_path, 3)
    with pytest.raises(JobError, match="--batch-size 0"):
        push_mongo(str(tmp_path), mongo_server, "x", batch_size=0)
    with pytest.raises(JobError, match="not a valid MongoDB collection name"):
        push_mongo(str(tmp_path), mongo_server, "a$b")


@pytest.mark.parametrize("case", ["unreachable", "missing-corpus", "empty-corpus", "bad-uri"])
def test_cli_bad_input_exits_non_zero_with_one_line(tmp_path, mongo_server, unused_tcp_port, case):
    uri, workdir = mongo_server, tmp_path
    if case == "unreachable":
        write_corpus(tmp_path, 3)
        uri = f"mongodb://127.0.0.1:{unused_tcp_port}"
        expected = f"error: cannot reach MongoDB at {uri} within 1s"
    elif case == "missing-corpus":
        workdir, expected = tmp_path / "nothing", "error: no corpus at"
    elif case == "empty-corpus":
        (tmp_path / "corpus.jsonl").write_text("\n")
        expected = "error: empty corpus"
    else:
        write_corpus(tmp_path, 3)
        uri, expected = "mongodb://", "error: --mongo-uri mongodb://:"
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "push-mongo", "--workdir", str(workdir),
                             "--mongo-uri", uri, "--collection", "c", "--timeout", "1"],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr


@pytest.fixture()
def unused_tcp_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
