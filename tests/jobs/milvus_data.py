"""Synthetic inputs for push-milvus/publish tests: a model manifest, a corpus and encoded vector chunks in
the layouts that export, prepare and encode write (``REPO/NAME/manifest.json``; ``W/corpus.jsonl``;
``W/vectors/meta.json`` + chunks)."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np

from mmsearch.jobs.corpus import CORPUS_FILE, Corpus
from mmsearch.jobs.encode import META, VECTORS, chunk_name, pack_chunk
from mmsearch.core.model_repository import ModelManifest


def write_manifest(repository: Path, name: str, dimension: int, seed: str = "a") -> ModelManifest:
    sha = hashlib.sha256(f"{name}-{dimension}-{seed}".encode()).hexdigest()
    manifest = {"name": name, "tower": "text", "family": "sentence-transformers", "source": "synthetic",
                "dimension": dimension, "metric": "IP", "onnx_sha256": sha, "output": "embedding",
                "towers": {"text": {"name": name, "onnx_sha256": sha}}}
    (repository / name).mkdir(parents=True, exist_ok=True)
    (repository / name / "manifest.json").write_text(json.dumps(manifest))
    return ModelManifest.from_dict(manifest)


def vectors(n: int, dimension: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    ids = rng.choice(2**53, size=n, replace=False).astype(np.int64)
    vecs = rng.standard_normal((n, dimension)).astype(np.float32)
    return ids, vecs / np.linalg.norm(vecs, axis=1, keepdims=True)


def corpus_of(ids: np.ndarray) -> Corpus:
    """A corpus with one small record per id (what push-milvus hashes into each row)."""
    records = [{"id": int(i), "question": f"document {int(i)}"} for i in ids]
    return Corpus(records, hashlib.sha256(corpus_bytes(records)).hexdigest())


def corpus_bytes(records: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in records).encode()


def write_vectors(workdir: Path, manifest: ModelManifest, ids: np.ndarray, vecs: np.ndarray, chunk: int = 4096,
                  records: list[dict] | None = None) -> None:
    """The vector chunks and meta.json, and the corpus.jsonl of those ids that meta.json fingerprints
    (``records``, default :func:`corpus_of` the ids)."""
    workdir.mkdir(parents=True, exist_ok=True)
    folder = workdir / VECTORS
    folder.mkdir(parents=True, exist_ok=True)
    corpus = corpus_bytes(corpus_of(ids).records if records is None else records)
    (workdir / CORPUS_FILE).write_bytes(corpus)
    starts = range(0, len(ids), chunk)
    for k, start in enumerate(starts):
        part = slice(start, start + chunk)
        (folder / chunk_name(k, len(ids[part]))).write_bytes(pack_chunk(ids[part], vecs[part], []))
    (folder / META).write_text(json.dumps({"model": manifest.name, "tower": "text",
                                           "onnx_sha256": manifest.onnx_sha256, "dimension": manifest.dimension,
                                           "chunk_size": chunk, "chunks": len(starts), "corpus_records": len(ids),
                                           "corpus_sha256": hashlib.sha256(corpus).hexdigest()}))
