"""push-milvus with a layout: scalar fields (INVERTED index) and the BM25 field from the corpus records,
recorded in the collection record; reruns with another layout refused; bad records name the record."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from mmsearch.jobs.corpus import document_hash
from mmsearch.jobs.push_milvus import milvus_row, push_milvus, read_layout
from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.record import read_manifest
from mmsearch.core.errors import MmsearchError
from tests.jobs.milvus_data import vectors, write_manifest, write_vectors

RECORDS = [
    {"question": "csv.DictReader", "answer": "Read CSV rows into dictionaries.", "category": "csv", "size": 3},
    {"question": "json.loads", "answer": "Deserialize a JSON document to a Python object.", "category": "json",
     "size": 1},
    {"question": "zipfile.ZipFile", "answer": "Read and write ZIP archives.", "category": 'x" or id > 0 or "',
     "size": 2},
]


@pytest.fixture()
def work(tmp_path):
    """A workdir with corpus.jsonl and encoded vectors of its records (ids = the records' ids)."""
    manifest = write_manifest(tmp_path / "repo", "m", 8)
    ids, vecs = vectors(len(RECORDS), 8)
    workdir = tmp_path / "work"
    records = [{"id": int(i), **r} for i, r in zip(ids, RECORDS)]
    write_vectors(workdir, manifest, ids, vecs, records=records)
    return tmp_path, records


def push(tmp_path, version="1", **kwargs):
    return push_milvus(str(tmp_path / "work"), str(tmp_path / "milvus.db"), "docs", version, str(tmp_path / "repo"),
                       "m", **kwargs)


def test_fields_and_bm25_are_written_indexed_and_recorded(work):
    tmp_path, records = work
    summary = push(tmp_path, fields="category:keyword,size:number", bm25_fields="question,answer")
    assert summary["entities"] == 3 and summary["fields"] == ["category", "size"] and summary["bm25"] == ["question", "answer"]
    client = connect(str(tmp_path / "milvus.db"))
    try:
        described = {f["name"]: f for f in client.describe_collection("docs_1")["fields"]}
        assert set(described) == {"id", "vector", "content_sha256", "category", "size", "text", "sparse"}
        assert {name: client.describe_index("docs_1", name)["index_type"] for name in ("category", "size")} == \
            {"category": "INVERTED", "size": "INVERTED"}
        recorded = read_manifest(client, "docs_1")["layout"]
        assert recorded == {"fields": [{"name": "category", "type": "keyword"}, {"name": "size", "type": "number"}],
                            "lexical": {"sources": ["question", "answer"], "analyzer": "english"}}
        rows = client.query("docs_1", filter="size >= 2", output_fields=["category", "text"])
        assert sorted(r["category"] for r in rows) == ["csv", 'x" or id > 0 or "']
        assert "csv.DictReader csv Dict Reader" in next(r["text"] for r in rows if r["category"] == "csv")
        hits = client.search("docs_1", data=["dictionaries reader"], anns_field="sparse", limit=3,
                             search_params={"metric_type": "BM25"})[0]
        assert hits[0]["id"] == records[0]["id"]  # stemmed: "dictionaries" meets "dictionaries", "reader" the name
    finally:
        close(client, str(tmp_path / "milvus.db"))


def test_a_rerun_with_another_layout_is_refused(work):
    tmp_path, _ = work
    push(tmp_path, fields="category:keyword")
    assert push(tmp_path, fields="category:keyword")["created"] is False
    with pytest.raises(MmsearchError, match="collection docs_1 was created with fields .*use a new --version"):
        push(tmp_path, fields="category:keyword", bm25_fields="question")


def test_a_record_without_a_number_names_it(work):
    tmp_path, records = work
    with pytest.raises(MmsearchError, match=f"record {records[0]['id']}: field 'rank' .* is missing"):
        push(tmp_path, fields="rank:number")


def test_the_row_of_a_record():
    layout = read_layout("category:keyword,n:number:size", "question")
    record = {"id": 5, "question": "os.path.join", "category": "os", "size": 2}
    row = milvus_row(record, [0.5, 0.5], layout)
    assert row == {"id": 5, "vector": [0.5, 0.5], "content_sha256": document_hash(record), "category": "os",
                   "n": 2.0, "text": "os.path.join os path join"}
    assert milvus_row({"id": 5, "x": 1}, [1.0], read_layout(None, None)) == \
        {"id": 5, "vector": [1.0], "content_sha256": document_hash({"id": 5, "x": 1})}


def test_a_changed_corpus_is_refused(work):
    tmp_path, _ = work
    meta = tmp_path / "work" / "vectors" / "meta.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "corpus_sha256": "0" * 64}))
    with pytest.raises(MmsearchError, match="were encoded from another corpus"):
        push(tmp_path, fields="category:keyword")


@pytest.mark.parametrize("flags, expected", [
    (["--fields", "category"], "error: --fields entry 'category': expected name:type"),
    (["--fields", "category:float"], "error: --fields 'category:float': type"),
    (["--fields", "id:number"], "error: --fields 'id:number': name: field name 'id' is reserved"),
    (["--bm25-fields", "answer", "--bm25-analyzer", "klingon"], "error: --bm25-analyzer 'klingon'"),
])
def test_cli_bad_layout_flags_exit_with_one_line(work, flags, expected):
    tmp_path, _ = work
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "push-milvus", "--workdir",
                             str(tmp_path / "work"), "--milvus-uri", str(tmp_path / "milvus.db"), "--scene", "s",
                             "--version", "1", "--repository", str(tmp_path / "repo"), "--model", "m", *flags],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr
