"""``mmsearch job push-milvus``: the encoded vectors into the collection ``<scene>_<version>``.

Decisions:
- The collection records the manifest of the exported model that built the
  vectors (``REPO/NAME/manifest.json``: name, onnx_sha256, dimension, metric,
  towers); vectors whose dimension differs from it, or from an existing
  collection, are refused (see :mod:`mmsearch.core.milvus`).
- Writes are ``upsert`` batches keyed by ``id`` (the last partial batch
  included), so a rerun after a crash (SIGKILL mid-batch) ends with exactly one
  entity per id. A rerun re-upserts everything: simpler than diffing, and on
  Milvus Lite fast enough for the corpora it is meant for.
- Batch size: 1000 by default. Measured on Milvus Lite (a bare insert and
  upsert loop, and the whole stage in bench/indexing.py): upsert (needed for
  crash safety) peaks at 500-1000 rows a batch and the engine slows sharply
  beyond that, so 1000: among the best, with the fewest round trips. A Milvus server has its own optimum; ``--batch-size`` sets it.
- The vectors must belong to the corpus the workdir holds now: encode records
  the corpus's SHA-256 beside them, and a corpus prepared again since (smaller,
  or changed) is refused naming both fingerprints, instead of pushing the old
  vectors (stale documents that summaries no longer back).
- Index: ``--index-type auto`` (the default) picks FLAT or IVF_FLAT by the
  number of vectors (``mmsearch.core.milvus.schema.auto_index``; measured with
  bench/scale.py); any explicit type overrides it. The collection records the
  index it got (and, for auto, why, and the search params serving uses).
- The final count (``count(*)`` with strong consistency) must equal the number
  of vectors; then the collection is marked complete, which ``publish`` requires,
  with the corpus fingerprint (the SHA-256 of ``corpus.jsonl``) in its state.
- Every row is built by :func:`milvus_row` from the corpus record and its
  vector: ``id``, ``vector``, the record's ``content_sha256`` and what the
  collection's layout declares (``--fields``, ``--bm25-fields``; see
  :mod:`mmsearch.core.fields`): the typed scalar fields and the BM25 text.
  ``push-milvus`` and ``sync`` (which reads the layout from the collection
  record) write the same rows.
"""
from __future__ import annotations

from typing import Iterable, Mapping

import numpy as np
import typer
from pydantic import ValidationError

from mmsearch.core import artifacts
from mmsearch.core.milvus.connection import session
from mmsearch.core.documents import row_of
from mmsearch.core.milvus.names import collection_name
from mmsearch.core.milvus.record import CollectionRecord
from mmsearch.core.milvus.rows import count, mark_complete, rebatch, upsert_rows
from mmsearch.core.milvus.schema import ensure_collection, validate_index
from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import (
    BatchSize, MilvusToken, MilvusUri, Model, ModelRepositoryUri, Scene, TIMEOUT, Timeout, Version, Workdir,
)
from mmsearch.jobs.corpus import Corpus, corpus_uri, read_corpus
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.jsonl import json_object
from mmsearch.jobs.progress import Progress
from mmsearch.core.fields import CollectionLayout, FieldError, parse_fields, parse_lexical
from mmsearch.core.model_repository import ModelManifest, ModelRepository, model_mismatch
from mmsearch.core.text_template import recorded_template


def milvus_row(record: dict, vector: np.ndarray, layout: CollectionLayout) -> dict:
    """The Milvus row of one corpus ``record`` (its ``id``) and its ``vector``: the record's content hash,
    every field the layout declares, typed, and the BM25 text (:func:`mmsearch.core.documents.row_of`, which
    the online writer uses too)."""
    try:
        return row_of(record, vector, layout)
    except FieldError as exc:
        raise JobError(f"{exc}; fix the corpus or --fields") from None


def check_bm25_sources(layout: CollectionLayout, records: Iterable[Mapping]) -> None:
    """JobError naming each ``--bm25-fields`` key that no corpus record has (a typo would index no text)."""
    if layout.lexical is None:
        return
    absent = set(layout.lexical.sources)
    keys: set[str] = set()
    for record in records:
        keys.update(record)
        absent.difference_update(record)
        if not absent:
            return
    raise JobError(f"--bm25-fields: no corpus record has the key {', '.join(repr(k) for k in sorted(absent))}, "
                   f"so BM25 would index no text (the corpus's keys: {', '.join(sorted(keys))})")


def milvus_rows(records: Mapping[int, dict], ids: np.ndarray, vectors: np.ndarray,
                layout: CollectionLayout, where: str) -> list[dict]:
    """Rows for (ids, vectors); JobError when an id has no corpus record."""
    rows = []
    for i, vector in zip(ids.tolist(), vectors):
        record = records.get(i)
        if record is None:
            raise JobError(f"vector id {i} has no record in the corpus of {where}: the vectors were encoded "
                           "from another corpus; re-run encode")
        rows.append(milvus_row(record, vector, layout))
    return rows


def push_vectors(milvus_uri: str, scene: str, version: str, manifest: ModelManifest,
                 batches: Iterable[tuple[np.ndarray, np.ndarray]], total: int, corpus: Corpus, *,
                 index_type: str = "auto", metric: str = "IP", index_params: dict | None = None,
                 batch_size: int = 1000, token: str = "", timeout: float = 10.0, text_template: str | None = None,
                 progress: Progress | None = None, layout: CollectionLayout | None = None) -> dict:
    """Upsert ``total`` vectors (given as (ids, vectors) chunks of any size) of ``corpus``'s records
    into ``scene_version``, with the fields and BM25 text ``layout`` declares."""
    layout = layout or CollectionLayout()
    if batch_size < 1:
        raise JobError(f"--batch-size {batch_size}: must be at least 1")
    if total < 1:
        raise JobError("no vectors to push: run `mmsearch job encode` first")
    name = collection_name(scene, version)
    check_bm25_sources(layout, corpus.records)
    index = validate_index(milvus_uri, index_type, metric, index_params, rows=total)
    dimension = manifest.dimension
    info = CollectionRecord.new(manifest.record(), scene, version, index, layout)
    records = corpus.by_id()
    with session(milvus_uri, f"on collection {name}", token=token, timeout=timeout) as client:
        created = ensure_collection(client, name, dimension=dimension, index=index, info=info)
        if progress is not None:
            progress.total = total
        pushed = 0
        for ids, vectors in rebatch(batches, batch_size):
            if vectors.ndim != 2 or vectors.shape[1] != dimension:
                raise JobError(f"dimension mismatch: the vectors are {vectors.shape[-1]}-d, model "
                               f"{manifest.name!r} and collection {name} are {dimension}-d; re-run encode")
            upsert_rows(client, name, milvus_rows(records, ids, vectors, layout, name))
            pushed += len(ids)
            if progress is not None:
                progress.update(len(ids))
        if pushed != total:
            raise JobError(f"read {pushed} vectors, expected {total}: the encoded shards are incomplete; re-run encode")
        found = count(client, name)
        if found != total:
            raise JobError(f"count check failed: collection {name} holds {found} entities, expected {total}"
                           + ("; it holds vectors of another corpus: use a new --version" if found > total else ""))
        mark_complete(client, name, found, corpus_sha256=corpus.sha256, text_template=text_template)
    return {"collection": name, "entities": found, "dimension": dimension, "created": created,
            "index": index["type"], "metric": index["metric"], "model": manifest.name,
            "fields": [f.name for f in layout.fields], "bm25": list(layout.lexical.sources) if layout.lexical else []}


def read_layout(fields: str | None, bm25_fields: str | None, bm25_analyzer: str = "english") -> CollectionLayout:
    """The layout of ``--fields`` / ``--bm25-fields`` / ``--bm25-analyzer``; JobError naming the flag."""
    try:
        return CollectionLayout(fields=parse_fields(fields), lexical=parse_lexical(bm25_fields, bm25_analyzer))
    except FieldError as exc:
        raise JobError(str(exc)) from None
    except ValidationError as exc:  # the layout's own check: a field declared twice
        raise JobError(f"--fields {fields!r}: {exc.errors()[0]['msg'].removeprefix('Value error, ')}: "
                       "declare each field once") from None


def push_milvus(workdir: str, milvus_uri: str, scene: str, version: str, repository: str, model: str, *,
                index_type: str = "auto", metric: str = "IP", index_params: dict | None = None,
                batch_size: int = 1000, token: str = "", timeout: float = 10.0,
                progress: Progress | None = None, fields: str | None = None, bm25_fields: str | None = None,
                bm25_analyzer: str = "english") -> dict:
    """Push the vectors that encode wrote under ``workdir`` (checked against ``model``'s manifest)."""
    from mmsearch.jobs.encode import VECTORS, read_meta, read_vectors

    layout = read_layout(fields, bm25_fields, bm25_analyzer)
    manifest = ModelRepository(repository).manifest(model)
    meta = read_meta(workdir)
    corpus = read_corpus(workdir)
    if meta.get("corpus_sha256") != corpus.sha256:
        raise JobError(f"the vectors in {artifacts.join(workdir, VECTORS)} were encoded from another corpus "
                       f"({meta.get('corpus_records')} records, sha256 {str(meta.get('corpus_sha256'))[:12]}) than "
                       f"{corpus_uri(workdir)} holds now ({len(corpus.records)} records, sha256 "
                       f"{corpus.sha256[:12]}): delete that vectors folder and re-run `mmsearch job encode`")
    other_model = model_mismatch({"name": meta.get("model"), "onnx_sha256": meta.get("onnx_sha256")},
                                 manifest.record())
    if other_model:
        raise JobError(f"the vectors in {workdir} were encoded with {other_model} (--model); "
                       "pass the --model that encoded them")
    total, batches = read_vectors(workdir)
    return push_vectors(milvus_uri, scene, version, manifest, batches, total, corpus, index_type=index_type,
                        metric=metric, index_params=index_params, batch_size=batch_size, token=token,
                        timeout=timeout, text_template=recorded_template(meta), progress=progress,
                        layout=layout)


def parse_index_params(text: str | None) -> dict | None:
    if not text:
        return None
    return json_object(text, f"--index-params {text!r}", fix="e.g. '{\"M\": 16, \"efConstruction\": 200}'")


@job_app.command("push-milvus")
def push_milvus_command(
    workdir: Workdir,
    milvus_uri: MilvusUri,
    scene: Scene,
    version: Version,
    repository: ModelRepositoryUri,
    model: Model,
    index_type: str = typer.Option("auto", envvar="MMSEARCH_INDEX_TYPE",
                                   help="auto (FLAT or IVF_FLAT by size) | FLAT | IVF_FLAT | AUTOINDEX (Lite); HNSW... (server)."),
    metric: str = typer.Option("IP", envvar="MMSEARCH_METRIC", help="IP | COSINE | L2."),
    index_params: str = typer.Option(None, envvar="MMSEARCH_INDEX_PARAMS", help="JSON index build params."),
    batch_size: BatchSize = 1000,
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
    fields: str = typer.Option(None, envvar="MMSEARCH_FIELDS",
                               help="Filterable fields: name:type[:corpus key],... (type keyword | number | bool), "
                                    "e.g. category:keyword; or a JSON list of {name, type, source}."),
    bm25_fields: str = typer.Option(None, envvar="MMSEARCH_BM25_FIELDS",
                                    help="Corpus keys indexed for BM25 full-text search, e.g. question,answer."),
    bm25_analyzer: str = typer.Option("english", envvar="MMSEARCH_BM25_ANALYZER", help="english | standard."),
) -> None:
    """Upsert the encoded vectors into Milvus collection <scene>_<version> and check the count."""
    with exit_on_error(), Progress("push-milvus", interval=0.5) as progress:
        summary = push_milvus(workdir, milvus_uri, scene, version, repository, model, index_type=index_type,
                              metric=metric, index_params=parse_index_params(index_params),
                              batch_size=batch_size, token=milvus_token, timeout=timeout, progress=progress,
                              fields=fields, bm25_fields=bm25_fields, bm25_analyzer=bm25_analyzer)
        progress.finish(**summary)
