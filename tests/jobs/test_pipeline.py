"""The stages end to end on the stdlib corpus with the real all-MiniLM-L6-v2 (the ``stdlib_index``
fixture ran prepare -> encode -> push-milvus -> push-mongo -> publish as processes): counts agree,
the collection records the model, and encoded queries find the expected documents."""
from __future__ import annotations

import json

import numpy as np
import pymongo
import pytest

from mmsearch.core.milvus.connection import connect
from mmsearch.core.milvus.record import read_manifest
from mmsearch.core.milvus.registry import resolve_collection
from mmsearch.core.milvus.rows import count

QUERIES = [
    ("read and write CSV files", "csv"),
    ("parse a JSON document into Python objects", "json"),
    ("regular expressions", "re"),
    ("regular expression pattern matching", "re"),
    ("join path components into a file path", "os"),
    ("SQLite database connection", "sqlite3"),
]


@pytest.fixture(scope="module")
def encode_query(stdlib_index):
    import onnxruntime as ort

    from mmsearch.core.tokenizers import load_tokenizer

    folder = stdlib_index.repository / stdlib_index.model
    tokenizer = load_tokenizer(folder)
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])

    def encode(text: str) -> np.ndarray:
        ids, mask = tokenizer.encode([text])
        return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0][0]

    return encode


@pytest.fixture(scope="module")
def milvus(stdlib_index):
    client = connect(str(stdlib_index.milvus_uri))
    yield client
    client.close()  # not close: other in-process users (the serving stack) share the engine


@pytest.fixture(scope="module")
def documents(stdlib_index):
    client = pymongo.MongoClient(stdlib_index.mongo_uri)
    yield client[stdlib_index.database][stdlib_index.collection]
    client.close()


def test_counts_agree_across_corpus_milvus_and_mongo(stdlib_index, milvus, documents):
    corpus = [json.loads(line) for line in (stdlib_index.workdir / "corpus.jsonl").read_text().splitlines()]
    assert 200 <= len(corpus) == stdlib_index.documents
    assert count(milvus, stdlib_index.milvus_collection) == len(corpus)
    assert documents.count_documents({}) == len(corpus)
    assert {"csv", "json", "os.path", "re", "sqlite3"} <= {r["question"] for r in corpus}


def test_alias_and_manifest(stdlib_index, milvus):
    assert resolve_collection(milvus, stdlib_index.scene) == stdlib_index.milvus_collection
    manifest = read_manifest(milvus, stdlib_index.scene)
    exported = json.loads((stdlib_index.repository / stdlib_index.model / "manifest.json").read_text())
    assert manifest["onnx_sha256"] == exported["onnx_sha256"] and manifest["dimension"] == 384
    assert manifest["name"] == stdlib_index.model and manifest["collection"] == stdlib_index.milvus_collection
    assert manifest["complete"] is True and manifest["index"]["metric"] == "IP"


@pytest.mark.parametrize("query, category", QUERIES)
def test_encoded_queries_find_the_expected_module(stdlib_index, milvus, documents, encode_query, query, category):
    collection = resolve_collection(milvus, stdlib_index.scene)
    hits = milvus.search(collection, data=[encode_query(query).tolist()], limit=3, anns_field="vector",
                         search_params={"metric_type": "IP"})[0]
    found = {d["_id"]: d for d in documents.find({"_id": {"$in": [h["id"] for h in hits]}})}
    top = [found[h["id"]] for h in hits]
    assert category in [d["category"] for d in top], [d["question"] for d in top]
    scores = [h["distance"] for h in hits]
    assert scores == sorted(scores, reverse=True) and 0 < scores[0] <= 1.0001


def test_json_parsing_query_finds_json_loads(stdlib_index, milvus, documents, encode_query):
    collection = resolve_collection(milvus, stdlib_index.scene)
    hits = milvus.search(collection, data=[encode_query("parse a JSON document into Python objects").tolist()],
                         limit=10, anns_field="vector", search_params={"metric_type": "IP"})[0]
    questions = [documents.find_one({"_id": h["id"]})["question"] for h in hits]
    assert "json.loads" in questions, questions  # 6th: json.load and the encoders' summaries come first
