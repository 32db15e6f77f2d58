"""``mmsearch job push-milvus``: the encoded vectors into the collection ``<scene>_<version>``.

Decisions:
- The collection records the manifest of the exported model that built the
  vectors (``REPO/NAME/manifest.json``: name, onnx_sha256, dimension, metric,
  towers); vectors whose dimension differs from it, or from an existing
  collection, are refused (see :mod:`mmsearch.core.milvus_store`).
- Writes are ``upsert`` batches keyed by ``id`` (the last partial batch
  included), so a rerun after a crash (SIGKILL mid-batch) ends with exactly one
  entity per id. A rerun re-upserts everything: simpler than diffing, and at
  Milvus Lite's ~10k rows/s fast enough for the corpora it is meant for.
- Batch size: 1000 by default. Measured on Milvus Lite 2.5.1 (2 shared cores,
  384-d, FLAT/IP, rows/s): a bare loop over 20k rows gave insert 15.5k @500,
  11.1k @1000, 8.7k @2000 and upsert 10.5k @500, 10.8k @1000, 7.9k @2000; the
  whole stage (bench/indexing.py, 22.5k stdlib vectors, Lite start-up and count
  check included) 5.6k @500, 5.5k @1000, 5.4k @2000 next to 10.5k for raw
  inserts. Upsert (needed for crash safety) peaks at 500-1000 and the engine
  slows sharply beyond ~1000 (5,000-row batches were 30x slower in an earlier
  measurement), so 1000: the best measured, and the fewest round trips among
  the best. A Milvus server has its own optimum; ``--batch-size`` sets it.
- Index: ``--index-type auto`` (the default) picks FLAT or IVF_FLAT by the
  number of vectors (``mmsearch.core.milvus_store.auto_index``; measured with
  bench/scale.py); any explicit type overrides it. The collection records the
  index it got (and, for auto, why, and the search params serving uses).
- The final count (``count(*)`` with strong consistency) must equal the number
  of vectors; then the collection is marked complete, which ``publish`` requires.
"""
from __future__ import annotations

import json
from typing import Iterable

import numpy as np
import typer

from mmsearch.core import milvus_store
from jobs.app import job_app
from jobs.errors import JobError, exit_on_error
from jobs.progress import Progress
from mmsearch.core.model_repository import ModelManifest, ModelRepository


def push_vectors(milvus_uri: str, scene: str, version: str, manifest: ModelManifest,
                 batches: Iterable[tuple[np.ndarray, np.ndarray]], total: int, *, index_type: str = "auto",
                 metric: str = "IP", index_params: dict | None = None, batch_size: int = 1000,
                 token: str = "", timeout: float = 10.0, progress: Progress | None = None) -> dict:
    """Upsert ``total`` vectors (given as (ids, vectors) chunks of any size) into ``scene_version``."""
    if batch_size < 1:
        raise JobError(f"--batch-size {batch_size}: must be at least 1")
    if total < 1:
        raise JobError("no vectors to push: run `mmsearch job encode` first")
    name = milvus_store.collection_name(scene, version)
    index = milvus_store.validate_index(milvus_uri, index_type, metric, index_params, rows=total)
    dimension = manifest.dimension
    info = milvus_store.CollectionRecord.new(manifest.record(), scene, version, index)
    with milvus_store.session(milvus_uri, f"on collection {name}", token=token, timeout=timeout) as client:
        created = milvus_store.ensure_collection(client, name, dimension=dimension, index=index, info=info)
        if progress is not None:
            progress.total = total
        pushed = 0
        for ids, vectors in milvus_store.rebatch(batches, batch_size):
            if vectors.ndim != 2 or vectors.shape[1] != dimension:
                raise JobError(f"dimension mismatch: the vectors are {vectors.shape[-1]}-d, model "
                               f"{manifest.name!r} and collection {name} are {dimension}-d; re-run encode")
            milvus_store.upsert_vectors(client, name, ids, vectors)
            pushed += len(ids)
            if progress is not None:
                progress.update(len(ids))
        if pushed != total:
            raise JobError(f"read {pushed} vectors, expected {total}: the encoded shards are incomplete; re-run encode")
        found = milvus_store.count(client, name)
        if found != total:
            raise JobError(f"count check failed: collection {name} holds {found} entities, expected {total}"
                           + ("; it holds vectors of another corpus: use a new --version" if found > total else ""))
        milvus_store.mark_complete(client, name, found)
    return {"collection": name, "entities": found, "dimension": dimension, "created": created,
            "index": index["type"], "metric": index["metric"], "model": manifest.name}


def push_milvus(workdir: str, milvus_uri: str, scene: str, version: str, repository: str, model: str, *,
                index_type: str = "auto", metric: str = "IP", index_params: dict | None = None,
                batch_size: int = 1000, token: str = "", timeout: float = 10.0,
                progress: Progress | None = None) -> dict:
    """Push the vectors that encode wrote under ``workdir`` (checked against ``model``'s manifest)."""
    from jobs.encode import read_meta, read_vectors

    manifest = ModelRepository(repository).manifest(model)
    meta = read_meta(workdir)
    if meta.get("onnx_sha256") != manifest.onnx_sha256:
        raise JobError(f"the vectors in {workdir} were encoded with model {meta.get('model')!r} "
                       f"(onnx {str(meta.get('onnx_sha256'))[:12]}), not --model {model!r} "
                       f"(onnx {manifest.onnx_sha256[:12]}); pass the model that encoded them")
    total, batches = read_vectors(workdir)
    return push_vectors(milvus_uri, scene, version, manifest, batches, total, index_type=index_type,
                        metric=metric, index_params=index_params, batch_size=batch_size, token=token,
                        timeout=timeout, progress=progress)


def parse_index_params(text: str | None) -> dict | None:
    if not text:
        return None
    try:
        params = json.loads(text)
    except json.JSONDecodeError as exc:
        raise JobError(f"--index-params {text!r}: not JSON ({exc.msg}); e.g. '{{\"M\": 16, \"efConstruction\": 200}}'") from None
    if not isinstance(params, dict):
        raise JobError(f"--index-params {text!r}: expected a JSON object")
    return params


@job_app.command("push-milvus")
def push_milvus_command(
    workdir: str = typer.Option(..., envvar="MMSEARCH_WORKDIR", help="Stage folder holding the encoded vectors."),
    milvus_uri: str = typer.Option(..., envvar="MMSEARCH_MILVUS_URI", help="A Milvus Lite file or http(s)://host:port."),
    scene: str = typer.Option(..., envvar="MMSEARCH_SCENE"),
    version: str = typer.Option(..., envvar="MMSEARCH_VERSION"),
    repository: str = typer.Option(..., envvar="MMSEARCH_REPOSITORY", help="Model repository (path or s3://)."),
    model: str = typer.Option(..., envvar="MMSEARCH_MODEL", help="The exported model (tower) that built the vectors."),
    index_type: str = typer.Option("auto", envvar="MMSEARCH_INDEX_TYPE",
                                   help="auto (FLAT or IVF_FLAT by size) | FLAT | IVF_FLAT | AUTOINDEX (Lite); HNSW... (server)."),
    metric: str = typer.Option("IP", envvar="MMSEARCH_METRIC", help="IP | COSINE | L2."),
    index_params: str = typer.Option(None, envvar="MMSEARCH_INDEX_PARAMS", help="JSON index build params."),
    batch_size: int = typer.Option(1000, envvar="MMSEARCH_BATCH_SIZE"),
    milvus_token: str = typer.Option("", envvar="MMSEARCH_MILVUS_TOKEN", help="Milvus server token (user:password)."),
    timeout: float = typer.Option(10.0, envvar="MMSEARCH_TIMEOUT", help="Seconds to wait for a Milvus server."),
) -> None:
    """Upsert the encoded vectors into Milvus collection <scene>_<version> and check the count."""
    with exit_on_error(), Progress("push-milvus", interval=0.5) as progress:
        summary = push_milvus(workdir, milvus_uri, scene, version, repository, model, index_type=index_type,
                              metric=metric, index_params=parse_index_params(index_params),
                              batch_size=batch_size, token=milvus_token, timeout=timeout, progress=progress)
        progress.finish(**summary)
