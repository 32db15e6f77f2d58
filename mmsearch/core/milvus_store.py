"""Milvus collections built by the jobs, and how online code finds them.

The URI picks the engine: a file path is Milvus Lite (the embedded default,
milvus-lite 2.5.1, C++ engine), ``http(s)://`` (or ``tcp://``, ``unix:``) a
Milvus server. Both go through pymilvus ``MilvusClient``.

Decisions:
- A collection ``<scene>_<version>`` has two fields: ``id`` INT64 primary key and
  ``vector`` FLOAT_VECTOR[dim]. Its description (set at creation, immutable)
  holds JSON ``{"mmsearch": {scene, version, created_at, index, manifest}}``,
  where ``manifest`` is the exported model's manifest (name, tower, family,
  source, dimension, metric, onnx_sha256, towers). A rerun with another model or
  dimension is refused instead of mixing vectors.
- Milvus Lite 2.5.1 answers UNIMPLEMENTED to every alias call (create_alias,
  alter_alias, describe_alias, list_aliases) and to alter_collection_properties.
  So mmsearch keeps a small registry collection, ``mmsearch_registry``
  (VARCHAR key, VARCHAR JSON value, a 2-d dummy vector because Milvus requires
  one), with ``alias:<scene>`` -> ``{"collection": ...}`` rows and
  ``collection:<name>`` -> ``{"complete": true, "count": n, "generation": g}`` rows
  (``g`` grows when documents change in place: :func:`bump_generation`). A one-row
  upsert is the atomic alias switch. On a Milvus server the native alias is set
  as well (for tools like Attu); the registry stays the source of truth, so
  :func:`resolve_collection` behaves the same on both engines. Online code must
  call it (or :func:`read_manifest`, which returns ``collection``) and search the
  concrete collection.
- Index: ``auto`` by default (:func:`auto_index`: FLAT for small collections,
  IVF_FLAT from :data:`AUTO_INDEX` rows on, measured with bench/scale.py); an
  explicit type overrides it. Milvus Lite accepts only FLAT, IVF_FLAT and
  AUTOINDEX, so HNSW (or anything else) on a Lite URI is refused with a
  message saying so rather than silently swapped for another index.
- One process at a time may open a Milvus Lite file (it holds a file lock); a
  second one is refused with a clear error.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from mmsearch.core.errors import MmsearchError

REGISTRY = "mmsearch_registry"
LITE_INDEXES = ("FLAT", "IVF_FLAT", "AUTOINDEX")
METRICS = ("IP", "COSINE", "L2")
DEFAULT_INDEX_PARAMS = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 128}}
# What ``--index-type auto`` (push-milvus's default) builds, from bench/scale.py on Milvus Lite 2.5.1
# (512-d unit vectors, 2 cores; the README has the table): FLAT below ``ivf_from_rows``, IVF_FLAT
# from there. Milvus Lite builds its own IVF index (128 lists, 16 probed) whatever nlist/nprobe say;
# these params are what a Milvus server is given, the same shape, and the search params are recorded
# in the collection's index so serving searches with them when an arm sets no match params.
AUTO_INDEX = {"ivf_from_rows": 100_000, "params": {"nlist": 128}, "search_params": {"nprobe": 16}}
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^[A-Za-z0-9_]+$")
_SERVER_SCHEMES = ("http://", "https://", "tcp://", "grpc://", "unix:")


class MilvusStoreError(MmsearchError):
    """A Milvus collection/alias problem the caller can fix; or Milvus is unreachable."""


def is_lite(uri: str) -> bool:
    """True when ``uri`` names a Milvus Lite file rather than a server."""
    return not str(uri).startswith(_SERVER_SCHEMES)


def collection_name(scene: str, version: str) -> str:
    if not _NAME.match(scene or "") or scene == REGISTRY:
        raise MilvusStoreError(f"--scene {scene!r}: use letters, digits and underscores, starting with a letter")
    if not _VERSION.match(str(version or "")):
        raise MilvusStoreError(f"--version {version!r}: use letters, digits and underscores (e.g. 3 or 20240601)")
    return f"{scene}_{version}"


def connect(uri: str, *, token: str = "", timeout: float = 10.0):
    """A ``MilvusClient`` for ``uri``; MilvusStoreError with one clear line when it cannot open."""
    from pymilvus import MilvusClient

    if is_lite(uri):
        path = Path(uri)
        if not re.match(r"^[a-zA-Z0-9.\-_]+$", path.name) or len(path.name) > 36:
            raise MilvusStoreError(f"--milvus-uri {uri}: a Milvus Lite file name must match [a-zA-Z0-9.-_]+ "
                                   "and be at most 36 characters (e.g. ./data/milvus.db)")
        if not path.parent.is_dir():
            raise MilvusStoreError(f"--milvus-uri {uri}: folder {path.parent} does not exist")
    # Job output stays one clear line: pymilvus logs every failed RPC (and the UNIMPLEMENTED
    # alias probes on Lite) at ERROR, and milvus-lite warns about pkg_resources on import.
    for name in ("pymilvus", "pymilvus.milvus_client"):
        logging.getLogger(name).setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*pkg_resources.*")
            return MilvusClient(uri=str(uri), token=token, timeout=timeout)
    except Exception as exc:
        if is_lite(uri):
            raise MilvusStoreError(f"cannot open Milvus Lite database {uri} (is another process using it? "
                                   f"only one may open a Lite file at a time): {short_error(exc)}") from None
        raise MilvusStoreError(f"cannot reach Milvus at {uri}: {short_error(exc)}") from None


def close(client, uri: str) -> None:
    """Close ``client``; for Milvus Lite also stop the engine so another process can open the file
    (pymilvus otherwise keeps it, and its file lock, until this process exits). The engine is
    shared by every client of this process on that file: use it where this client is the only one
    (the job stages), plain ``client.close()`` elsewhere."""
    client.close()
    if is_lite(uri):
        from milvus_lite.server_manager import server_manager_instance

        if str(Path(uri).absolute().resolve()) in server_manager_instance._servers:
            server_manager_instance.release_server(uri)


@contextlib.contextmanager
def session(uri: str, doing: str, *, token: str = "", timeout: float = 10.0) -> Iterator:
    """A client for ``uri``, released at the end (the Lite file too). A pymilvus failure inside
    (a server going away, a refused request) becomes one MilvusStoreError line: Milvus at URI failed DOING."""
    client = connect(uri, token=token, timeout=timeout)
    try:
        yield client
    except MmsearchError:
        raise
    except Exception as exc:
        raise MilvusStoreError(f"Milvus at {uri} failed {doing}: {short_error(exc)}") from None
    finally:
        close(client, uri)


def short_error(exc: BaseException) -> str:
    """One line of at most 300 characters describing ``exc`` (pymilvus exceptions: their message)."""
    text = " ".join(str(getattr(exc, "message", None) or exc).split())
    return (text[:300] + "...") if len(text) > 300 else (text or type(exc).__name__)


def _unimplemented(exc: BaseException) -> bool:
    return "UNIMPLEMENTED" in str(exc).upper()


# --- the registry (aliases and completion marks that work on Milvus Lite) -----------------------

def _ensure_registry(client) -> None:
    from pymilvus import DataType

    if not client.has_collection(REGISTRY):
        schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                      description="mmsearch: aliases and completed collections")
        schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
        schema.add_field("value", DataType.VARCHAR, max_length=65535)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
        index = client.prepare_index_params()
        index.add_index("vector", index_type="FLAT", metric_type="L2")
        client.create_collection(REGISTRY, schema=schema, index_params=index)
    _ensure_loaded(client, REGISTRY)


def _ensure_loaded(client, name: str) -> None:
    state = client.get_load_state(name).get("state")
    if "Loaded" not in str(state):
        client.load_collection(name)


def registry_get(client, key: str) -> dict | None:
    if not client.has_collection(REGISTRY):
        return None
    _ensure_loaded(client, REGISTRY)
    rows = client.query(REGISTRY, filter=f"key == {json.dumps(key)}", output_fields=["value"],
                        consistency_level="Strong")
    return json.loads(rows[0]["value"]) if rows else None


def registry_put(client, key: str, value: dict) -> None:
    _ensure_registry(client)
    client.upsert(REGISTRY, [{"key": key, "value": json.dumps(value), "vector": [0.0, 0.0]}])


def registry_delete(client, key: str) -> None:
    if client.has_collection(REGISTRY):
        client.delete(REGISTRY, filter=f"key == {json.dumps(key)}")


# --- collections --------------------------------------------------------------------------------

@dataclass(frozen=True)
class CollectionRecord:
    """What mmsearch records in a collection's description: which scene and version it is, when it
    was created, its index, and the manifest record of the model that built its vectors
    (:meth:`mmsearch.core.model_repository.ModelManifest.record`)."""

    scene: str
    version: str
    created_at: float
    index: dict
    manifest: dict

    @classmethod
    def new(cls, manifest: dict, scene: str, version: str, index: dict) -> "CollectionRecord":
        return cls(scene, str(version), time.time(), dict(index), dict(manifest))

    def to_description(self) -> str:
        return json.dumps({"mmsearch": dataclasses.asdict(self)}, separators=(",", ":"))

    @classmethod
    def from_description(cls, description: str) -> "CollectionRecord | None":
        try:
            info = json.loads(description or "").get("mmsearch")
        except (ValueError, AttributeError):
            return None
        if not isinstance(info, dict) or not isinstance(info.get("manifest"), dict):
            return None
        return cls(str(info.get("scene", "")), str(info.get("version", "")), float(info.get("created_at", 0)),
                   dict(info.get("index") or {}), dict(info["manifest"]))


def read_info(client, name: str) -> CollectionRecord | None:
    """The record in collection ``name``'s description (None if not made by mmsearch)."""
    return CollectionRecord.from_description(client.describe_collection(name).get("description") or "")


def _dimension(client, name: str) -> int | None:
    for field in client.describe_collection(name).get("fields", []):
        if field.get("name") == "vector":
            return int(field.get("params", {}).get("dim"))
    return None


def auto_index(rows: int) -> dict:
    """The index ``--index-type auto`` picks for a collection of ``rows`` vectors (see :data:`AUTO_INDEX`). Pure."""
    if rows >= AUTO_INDEX["ivf_from_rows"]:
        return {"type": "IVF_FLAT", "params": dict(AUTO_INDEX["params"]),
                "search_params": dict(AUTO_INDEX["search_params"]), "chosen": f"auto: {rows} rows"}
    return {"type": "FLAT", "params": {}, "chosen": f"auto: {rows} rows"}


def validate_index(uri: str, index_type: str, metric: str, params: dict | None, rows: int | None = None) -> dict:
    """The index spec ``{type, metric, params[, search_params, chosen]}``; MilvusStoreError for what the
    engine refuses. ``index_type`` ``auto`` picks by ``rows`` (:func:`auto_index`); ``params`` given
    with it replace the picked index's build params."""
    index_type, metric = index_type.upper(), metric.upper()
    if metric not in METRICS:
        raise MilvusStoreError(f"--metric {metric}: use one of {', '.join(METRICS)} (IP for normalised vectors)")
    if index_type == "AUTO":
        if rows is None:
            raise MilvusStoreError("--index-type auto needs the number of vectors; give an index type")
        picked = auto_index(rows)
        return {**picked, "metric": metric, "params": dict(params) if params else picked["params"]}
    if is_lite(uri) and index_type not in LITE_INDEXES:
        raise MilvusStoreError(f"--index-type {index_type}: Milvus Lite ({uri}) supports only "
                               f"{', '.join(LITE_INDEXES)} (or auto); use FLAT here, or a Milvus server URI for "
                               f"{index_type}")
    return {"type": index_type, "metric": metric,
            "params": dict(params) if params else dict(DEFAULT_INDEX_PARAMS.get(index_type, {}))}


def ensure_collection(client, name: str, *, dimension: int, index: dict, info: CollectionRecord) -> bool:
    """Create ``name`` (True) or check that the existing one fits (False): same dimension, same model."""
    from pymilvus import DataType

    if client.has_collection(name):
        have = _dimension(client, name)
        if have != dimension:
            raise MilvusStoreError(f"dimension mismatch: collection {name} holds {have}-d vectors, these are "
                                   f"{dimension}-d; use a new --version for another model")
        old = read_info(client, name)
        if old is None:
            raise MilvusStoreError(f"collection {name} exists but was not made by mmsearch; "
                                   "use another --version or drop it")
        if old.manifest.get("onnx_sha256") != info.manifest.get("onnx_sha256"):
            raise MilvusStoreError(f"collection {name} was built with model {old.manifest.get('name')!r} "
                                   f"(onnx {str(old.manifest.get('onnx_sha256'))[:12]}), not this one; "
                                   "use a new --version")
        _ensure_loaded(client, name)
        return False
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                  description=info.to_description())
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dimension))
    index_params = client.prepare_index_params()
    index_params.add_index("vector", index_type=index["type"], metric_type=index["metric"], params=index["params"])
    client.create_collection(name, schema=schema, index_params=index_params)
    _ensure_loaded(client, name)
    return True


def rebatch(batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut (ids, vectors) chunks into batches of exactly ``size`` rows, the last one partial."""
    pending_ids: list[np.ndarray] = []
    pending_vecs: list[np.ndarray] = []
    held = 0
    for ids, vectors in batches:
        pending_ids.append(np.asarray(ids, dtype=np.int64))
        pending_vecs.append(np.asarray(vectors, dtype=np.float32))
        held += len(ids)
        while held >= size:
            all_ids, all_vecs = np.concatenate(pending_ids), np.concatenate(pending_vecs)
            yield all_ids[:size], all_vecs[:size]
            pending_ids, pending_vecs = [all_ids[size:]], [all_vecs[size:]]
            held -= size
    if held:
        yield np.concatenate(pending_ids), np.concatenate(pending_vecs)


def upsert_vectors(client, name: str, ids: np.ndarray, vectors: np.ndarray) -> None:
    client.upsert(name, [{"id": int(i), "vector": v} for i, v in zip(ids.tolist(), vectors)])


def count(client, name: str) -> int:
    rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def mark_complete(client, name: str, n: int) -> None:
    """Mark ``name`` complete with ``n`` entities (keeping its documents' generation, see below)."""
    mark = registry_get(client, f"collection:{name}") or {}
    registry_put(client, f"collection:{name}", {"complete": True, "count": n, "at": time.time(),
                                                 "generation": int(mark.get("generation", 0))})


def is_complete(client, name: str) -> bool:
    mark = registry_get(client, f"collection:{name}")
    return bool(mark and mark.get("complete"))


def bump_generation(client, name: str) -> int:
    """Record that documents of collection ``name`` changed in place; returns the new generation.

    The generation is a counter in the collection's registry row that only ever grows (a rerun
    of push-milvus keeps it). Serving keys its summary cache on (concrete collection, generation),
    so a stage that changes the documents of a live collection in place (incremental sync:
    upserted or deleted documents, in MongoDB and Milvus) calls this once when its writes are
    done; serving's route watcher reads the new generation on its next round and stops serving
    what it cached before. A full rebuild needs no bump: it is a new collection.
    """
    mark = registry_get(client, f"collection:{name}")
    if mark is None:
        raise MilvusStoreError(f"collection {name} has no registry record: push it with "
                               "`mmsearch job push-milvus` first")
    generation = int(mark.get("generation", 0)) + 1
    registry_put(client, f"collection:{name}", {**mark, "generation": generation, "changed_at": time.time()})
    return generation


# --- aliases ------------------------------------------------------------------------------------

def set_alias(client, alias: str, collection: str) -> None:
    """Point ``alias`` at ``collection`` in one step (registry row; native alias too where supported)."""
    registry_put(client, f"alias:{alias}", {"collection": collection, "at": time.time()})
    try:
        try:
            client.describe_alias(alias)
            client.alter_alias(collection, alias)
        except Exception as exc:
            if _unimplemented(exc):
                raise
            client.create_alias(collection, alias)
    except Exception as exc:
        if not _unimplemented(exc):  # Milvus Lite: the registry row is the alias
            raise MilvusStoreError(f"cannot set alias {alias} -> {collection}: {short_error(exc)}") from None


def alias_target(client, alias: str) -> str | None:
    row = registry_get(client, f"alias:{alias}")
    return row.get("collection") if row else None


def drop_alias(client, alias: str) -> None:
    registry_delete(client, f"alias:{alias}")
    try:
        client.drop_alias(alias)
    except Exception:
        pass  # Milvus Lite has no native aliases; on a server it may not exist


def resolve_collection(client, name: str) -> str:
    """The concrete collection behind ``name`` (an mmsearch alias, a native alias, or a collection)."""
    target = alias_target(client, name)
    if target:
        return target
    if client.has_collection(name):
        return name
    try:
        return client.describe_alias(name)["collection_name"]
    except Exception:
        raise MilvusStoreError(f"no collection or alias named {name!r}: publish one with "
                               f"`mmsearch job publish --scene {name} --version V`") from None


def read_manifest(client, collection_or_alias: str) -> dict:
    """The export manifest of the model that built the collection (alias resolved), plus
    ``collection`` (the concrete name to search), ``scene``, ``version``, ``index``, ``complete``
    and ``generation`` (of its documents, see :func:`bump_generation`)."""
    name = resolve_collection(client, collection_or_alias)
    info = read_info(client, name)
    if info is None:
        raise MilvusStoreError(f"collection {name} records no model manifest (not built by `mmsearch job push-milvus`)")
    mark = registry_get(client, f"collection:{name}") or {}
    return {**info.manifest, "collection": name, "scene": info.scene, "version": info.version,
            "index": info.index, "complete": bool(mark.get("complete")),
            "generation": int(mark.get("generation", 0))}


def scene_collections(client, scene: str) -> list[dict]:
    """``[{name, version, created_at}]`` of the collections pushed for ``scene``, oldest first."""
    found = []
    for name in client.list_collections():
        if name == REGISTRY or not name.startswith(f"{scene}_"):
            continue
        info = read_info(client, name)
        if info and info.scene == scene:
            found.append({"name": name, "version": info.version, "created_at": info.created_at})
    return sorted(found, key=lambda c: (c["created_at"], c["name"]))


def drop_collection(client, name: str) -> None:
    client.drop_collection(name)
    registry_delete(client, f"collection:{name}")


