"""How a job fails, as a real ``mmsearch job`` process: one ``error:`` line, exit 1, no traceback,
no credentials (once, a --workdir that is a file printed a traceback, and a Milvus URI's password
was printed in the error)."""
from __future__ import annotations

import subprocess

import pytest

from mmsearch.dev.processes import free_port
from tests.support.jobs import job


def one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.mark.parametrize("where", ["file", "under-a-file", "unwritable"])
def test_a_workdir_that_cannot_be_written_is_one_error_line(tmp_path, where):
    a_file = tmp_path / "a-file"
    a_file.write_text("not a folder")
    workdir = {"file": a_file, "under-a-file": a_file / "work", "unwritable": "/proc/mmsearch-work"}[where]
    line = one_error_line(job("prepare", "--workdir", str(workdir), "--source-kind", "stdlib", "--source", "csv"))
    assert str(workdir) in line and "--workdir" in line, line


def test_milvus_credentials_never_appear_in_a_job_error():
    uri = f"http://root:s3cret-pw@127.0.0.1:{free_port()}"
    line = one_error_line(job("publish", "--milvus-uri", uri, "--scene", "s", "--version", "1", "--timeout", "1"))
    assert "s3cret-pw" not in line, line
    assert "http://root:***@127.0.0.1" in line, line


def test_mongo_credentials_never_appear_in_a_job_error(tmp_path):
    (tmp_path / "corpus.jsonl").write_text('{"id": 1, "question": "q", "answer": "a"}\n')
    uri = f"mongodb://root:s3cret-pw@127.0.0.1:{free_port()}/?authSource=admin"
    line = one_error_line(job("push-mongo", "--workdir", str(tmp_path), "--mongo-uri", uri, "--collection", "c",
                              "--timeout", "1"))
    assert "s3cret-pw" not in line and "root:***@" in line, line


@pytest.mark.parametrize("args, expected", [
    (["prepare", "--workdir", "w", "--source-kind", "pdf"], "error: Invalid value for '--source-kind'"),
    (["prepare", "--workdir", "w", "--source-kind", "qa", "--nope"], "error: No such option: --nope"),
    (["evaluate", "--k", "ten"], "error: Invalid value for '--k'"),
])
def test_a_usage_error_is_one_line_not_a_usage_box(args, expected):
    """Once Typer's framed, multi-line usage box."""
    result = job(*args)
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(expected), result.stderr
    assert "--help" in lines[0] and "╭" not in result.stderr
