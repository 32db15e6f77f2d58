"""What a hostile probe fed the offline stages: each once printed a traceback, wasted the stages before
the one that failed, or ran on as if nothing were wrong. Every one is now refused with one clear line
naming what is wrong, before any work or write it would spoil."""
from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pymongo
import pytest

from mmsearch.core.milvus.connection import session
from mmsearch.core.milvus.registry import resolve_alias
from mmsearch.core.quality import Thresholds, shortfalls
from mmsearch.jobs.corpus import CORPUS_FILE
from mmsearch.jobs.encode import CHARS_PER_TOKEN, TextInputs, bounded_text, load_encoder
from mmsearch.jobs.errors import JobError
from mmsearch.jobs.evaluate import evaluate
from mmsearch.jobs.prepare import MAX_RECORD_BYTES, prepare
from mmsearch.jobs.publish import publish
from mmsearch.jobs.push_milvus import push_vectors, read_layout
from mmsearch.jobs.sync import sync
from tests.jobs.milvus_data import corpus_bytes, corpus_of, vectors, write_manifest
from tests.support.jobs import job


def one_error_line(result: subprocess.CompletedProcess, code: int = 1) -> str:
    assert result.returncode == code, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def qa_file(tmp_path: Path, *lines: str) -> Path:
    path = tmp_path / "qa.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --------------------------------------------------------------------------- prepare

@pytest.mark.parametrize("line, expected", [
    ('{"qid": 1, "title": "t", "answer": ' + "[" * 100_000 + "]" * 100_000 + "}", "line 1: JSON nested too deeply"),
    ('{"qid": ' + "7" * 5000 + ', "title": "t", "answer": "a"}', "line 1: not valid JSON (Exceeds the limit"),
    ('{"qid": 1, "title": "\\ud800", "answer": "a"}', "line 1: a \\u escape of a lone surrogate"),
    ('{"qid": 1, "title": "t", "answer": NaN}', "line 1: not valid JSON (NaN is not a JSON value)"),
    ('{"qid": 1, "title": "t", "answer": -Infinity}', "line 1: not valid JSON (-Infinity is not a JSON value)"),
    ('{"qid": 1, "title": "t", "answer": 1e999}', "line 1: not valid JSON (1e999 is beyond the range"),
    ('{"qid": [1, 2], "title": "t", "answer": "a"}', "line 1: id field 'qid' is a list"),
    ('{"qid": {"a": 1}, "title": "t", "answer": "a"}', "line 1: id field 'qid' is an object"),
    ('{"qid": true, "title": "t", "answer": "a"}', "line 1: id field 'qid' is a boolean"),
    ('{"qid": 1.0, "title": "t", "answer": "a"}', "line 1: id field 'qid' is a number with a fraction"),
])
def test_prepare_refuses_what_json_or_a_key_cannot_be(tmp_path, line, expected):
    """Once: tracebacks (RecursionError, the int digit limit, UnicodeEncodeError), keys by repr, 1 and 1.0 two
    records, NaN accepted."""
    source = qa_file(tmp_path, line)
    with pytest.raises(JobError) as err:
        prepare(str(tmp_path / "w"), "qa", str(source))
    assert expected in str(err.value)
    assert not (tmp_path / "w" / CORPUS_FILE).exists()


def test_prepare_cli_deeply_nested_json_is_one_line(tmp_path):
    source = qa_file(tmp_path, '{"qid": 1, "title": ' + "[" * 100_000 + "]" * 100_000 + ', "answer": "a"}')
    line = one_error_line(job("prepare", "--workdir", str(tmp_path / "w"), "--source-kind", "qa",
                              "--source", str(source)))
    assert "line 1: JSON nested too deeply" in line


def test_prepare_from_s3_without_credentials_is_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MMSEARCH_S3_"))}
    env.update(AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_CONFIG_FILE=str(tmp_path / "none"),
               AWS_EC2_METADATA_DISABLED="true", AWS_DEFAULT_REGION="us-east-1")
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "prepare", "--workdir", str(tmp_path / "w"),
                             "--source-kind", "qa", "--source", "s3://some-bucket/qa.jsonl"],
                            capture_output=True, text=True, timeout=120, env=env)
    line = one_error_line(result)
    assert "--source s3://some-bucket/qa.jsonl" in line and "credentials" in line, line


def test_a_record_mongodb_cannot_store_is_refused_at_prepare(tmp_path):
    """Once push-mongo's DocumentTooLarge, after prepare, encode and push-milvus had spent their time."""
    big = "x" * (MAX_RECORD_BYTES + 1)
    source = qa_file(tmp_path, json.dumps({"qid": "small", "title": "t", "answer": "a"}),
                     json.dumps({"qid": "huge", "title": "t", "answer": big}))
    with pytest.raises(JobError, match=r"record id \d+ is 8\.0 MiB of JSON \(its largest field 'answer'\), over "
                                       r"the 8 MiB"):
        prepare(str(tmp_path / "w"), "qa", str(source))


# --------------------------------------------------------------------------- encode

def test_encode_cuts_a_huge_text_before_tokenizing_it_to_the_same_tokens(minilm_repo):
    """A 50 MB text was tokenized whole (65 s) and then truncated to the model's max length."""
    inputs = TextInputs(load_encoder(str(minilm_repo), "minilm", device="cpu", threads=1), "{answer}")
    max_length = inputs.tokenizer.max_length
    text = "the quick brown fox jumps over the lazy dog " * (3 * max_length * CHARS_PER_TOKEN // 44)
    (cut,) = inputs.texts([{"id": 1, "answer": text}])
    assert len(cut) == max_length * CHARS_PER_TOKEN < len(text)
    ids_cut, _ = inputs.tokenizer.encode([cut])
    ids_whole, _ = inputs.tokenizer.encode([text])
    assert ids_cut.shape == (1, max_length) and (ids_cut == ids_whole).all()


def test_bounded_text_keeps_the_side_truncation_keeps():
    assert bounded_text("abcdef", None) == "abcdef"
    assert bounded_text("a" * CHARS_PER_TOKEN + "b", 1) == "a" * CHARS_PER_TOKEN
    assert bounded_text("b" + "a" * CHARS_PER_TOKEN, 1, "left") == "a" * CHARS_PER_TOKEN


# --------------------------------------------------------------------------- evaluate

@pytest.fixture()
def workdir(tmp_path) -> Path:
    folder = tmp_path / "work"
    folder.mkdir()
    (folder / CORPUS_FILE).write_bytes(corpus_bytes([{"id": 1, "question": "a"}, {"id": 2, "question": "b"}]))
    return folder


def _evaluate(tmp_path, workdir, body: str | bytes, **kwargs):
    queries = tmp_path / "q.jsonl"
    queries.write_bytes(body if isinstance(body, bytes) else body.encode())
    return evaluate(str(tmp_path / "none.db"), "docs", str(queries), str(tmp_path / "repo"), str(workdir), **kwargs)


@pytest.mark.parametrize("body, expected", [
    (b'{"query": "caf\xe9", "relevant_ids": [1]}\n', "not UTF-8 text"),
    ('{"query": "x", "relevant": ' + "[" * 100_000 + "]" * 100_000 + "}\n", "line 1: JSON nested too deeply"),
    # labels that can never be found: recall 0.000 read as a measurement
    ('{"query": "x", "relevant": {"titel": "a"}}\n', "'relevant' names the field 'titel', which no corpus record"),
    ('{"query": "x", "relevant_ids": [998]}\n{"query": "y", "relevant_ids": [999]}\n',
     "no label names a document of the corpus"),
    # serving would refuse this query (MMSEARCH_MAX_QUERY_CHARS)
    ('{"query": "' + "x" * 1001 + '", "relevant_ids": [1]}\n', "line 1: the query is 1001 characters, over the 1000"),
])
def test_evaluate_refuses_a_query_set_that_measures_nothing(tmp_path, workdir, body, expected):
    with pytest.raises(JobError) as err:
        _evaluate(tmp_path, workdir, body)
    assert expected in str(err.value)


def test_evaluate_refuses_an_image_over_the_request_limit(tmp_path, workdir):
    (tmp_path / "big.png").write_bytes(b"\0" * (8 * 1024 * 1024 + 1))
    with pytest.raises(JobError, match="line 1: image 'big.png' is 8388609 bytes, over the 8388608"):
        _evaluate(tmp_path, workdir, '{"image": "big.png", "relevant_ids": [1]}\n')


@pytest.mark.parametrize("kwargs, expected", [
    ({"k": 100_000}, "--k 100000: give 1 to 100"),
    ({"summary_file": "/no/such/folder/summary.json"}, "--summary-file /no/such/folder/summary.json: its folder"),
])
def test_evaluate_checks_its_flags_before_any_work(tmp_path, workdir, kwargs, expected):
    """Once: --k 100000 blamed on Milvus; a --summary-file in a missing folder failed after the whole run."""
    with pytest.raises(JobError) as err:
        _evaluate(tmp_path, workdir, '{"query": "x", "relevant_ids": [1]}\n', **kwargs)
    assert str(err.value).startswith(expected), err.value


def test_the_gate_refuses_to_judge_an_evaluation_with_labels_naming_nothing():
    summary = {"k": 10, "recall": 0.9, "p99_ms": 5.0, "unresolved": 2}
    (message,) = shortfalls(summary, Thresholds(min_recall=0.5))
    assert message.startswith("the evaluation counted 2 labels that name no document")
    assert shortfalls(summary, Thresholds()) == []  # no gate asked for: nothing to judge


# --------------------------------------------------------------------------- publish

@pytest.fixture()
def candidate(tmp_path):
    """A complete collection s_1 and a report about it."""
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path / "repo", "m", 8)
    ids, vecs = vectors(5, 8)
    push_vectors(lite, "s", "1", manifest, [(ids, vecs)], 5, corpus_of(ids))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"summary": {"collection": "s_1", "k": 10, "recall": 0.5, "p99_ms": 10.0}}))
    return lite, report


def _alias(lite: str) -> str | None:
    with session(lite, "in the test") as client:
        return resolve_alias(client, "s")


@pytest.mark.parametrize("thresholds, expected", [
    ({"min_recall": math.nan}, "--min-recall nan: give a recall from 0 to 1"),
    ({"min_recall": -1.0}, "--min-recall -1.0: give a recall from 0 to 1"),
    ({"min_recall": 1.5}, "--min-recall 1.5"),
    ({"max_p99_ms": math.nan}, "--max-p99-ms nan: give milliseconds above 0"),
    ({"max_p99_ms": 0.0}, "--max-p99-ms 0.0"),
    ({"max_regression": math.inf}, "--max-regression inf"),
])
def test_a_gate_bar_that_is_no_bar_is_refused(candidate, thresholds, expected):
    """NaN compares false: --min-recall nan passed every candidate, and it was published."""
    lite, report = candidate
    with pytest.raises(JobError, match=expected.replace("(", r"\(")):
        publish(lite, "s", "1", report=str(report), **thresholds)
    assert _alias(lite) is None


def test_a_nan_threshold_from_the_environment_is_one_line(candidate):
    lite, report = candidate
    line = one_error_line(job("publish", "--milvus-uri", lite, "--scene", "s", "--version", "1", "--report", str(report),
                              env={"MMSEARCH_MAX_P99_MS": "nan"}))
    assert line.startswith("error: --max-p99-ms nan"), line
    assert _alias(lite) is None


def test_a_report_with_a_recall_that_is_not_a_number_is_blamed_on_the_report(candidate):
    """Once: blamed on Milvus (the float() failed inside its session)."""
    lite, report = candidate
    report.write_text(json.dumps({"summary": {"collection": "s_1", "k": 10, "recall": "high", "p99_ms": 10.0}}))
    with pytest.raises(JobError, match="summary.recall is 'high', not a number"):
        publish(lite, "s", "1", report=str(report), min_recall=0.1)
    assert _alias(lite) is None


# --------------------------------------------------------------------------- push-milvus, sync

def test_bm25_fields_no_record_has_are_refused_before_the_collection_is_made(tmp_path):
    """Once: an empty BM25 index built silently."""
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path / "repo", "m", 8)
    ids, vecs = vectors(3, 8)
    with pytest.raises(JobError, match="--bm25-fields: no corpus record has the key 'nosuchkey'"):
        push_vectors(lite, "s", "1", manifest, [(ids, vecs)], 3, corpus_of(ids),
                     layout=read_layout(None, "question,nosuchkey"))
    with session(lite, "in the test") as client:
        assert not client.has_collection("s_1")


def test_a_field_declared_twice_is_named():
    """Once: only pydantic's 'For further information visit ...' footer."""
    with pytest.raises(JobError) as err:
        read_layout("category:keyword,category:number", None)
    assert "fields declared twice: ['category']" in str(err.value) and "pydantic" not in str(err.value)


def test_sync_into_a_mongodb_collection_that_does_not_exist_creates_nothing(tmp_path, mongo_server):
    """Once: the collection was created (holding nothing) and left behind, then a count check failed."""
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path / "repo", "m", 8)
    ids, vecs = vectors(4, 8)
    corpus = corpus_of(ids)
    push_vectors(lite, "s", "1", manifest, [(ids, vecs)], 4, corpus)
    publish(lite, "s", "1")
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / CORPUS_FILE).write_bytes(corpus_bytes(corpus.records))
    database = f"hostile_{tmp_path.name}"[:60]
    with pytest.raises(JobError, match=f"MongoDB collection {database}.nosuch does not exist"):
        sync(str(tmp_path / "w"), lite, mongo_server, "s", str(tmp_path / "repo"), "m", collection="nosuch",
             database=database, timeout=10)
    with pymongo.MongoClient(mongo_server) as client:
        assert "nosuch" not in client[database].list_collection_names()
