"""Milvus collections built by the jobs, and how online code finds them.

The URI picks the engine: a file path is Milvus Lite (the embedded default,
milvus-lite 2.5.1, C++ engine), ``http(s)://`` (or ``tcp://``, ``unix:``) a
Milvus server. Both go through pymilvus ``MilvusClient``.

Decisions:
- A collection ``<scene>_<version>`` has ``id`` INT64 primary key,
  ``vector`` FLOAT_VECTOR[dim] and ``content_sha256`` VARCHAR: the hash of the
  corpus record the row was built from (``mmsearch.jobs.corpus.document_hash``), so
  ``sync`` can tell new, changed and removed documents from what a version
  holds; plus what its layout declares (:mod:`mmsearch.core.fields`): one
  scalar field per filterable field (with an INVERTED index) and, with BM25,
  ``text`` (VARCHAR, analyzer on) feeding ``sparse`` (SPARSE_FLOAT_VECTOR,
  Milvus's built-in BM25 function, SPARSE_INVERTED_INDEX). Every row is built
  by one function (``mmsearch.jobs.push_milvus.milvus_row``).
- The collection record (:class:`CollectionRecord`: scene, version,
  created_at, index, the manifest of the model that built the vectors, and
  ``fields``/``lexical``, the layout) is written twice at creation: JSON
  ``{"mmsearch": ...}`` in the collection's description (for tools like Attu)
  and in the collection's registry row, which is what mmsearch reads
  (milvus-lite 3.x keeps no descriptions). A record written before layouts
  existed reads as no fields and no BM25. A rerun with another model,
  dimension or layout is refused instead of mixing vectors.
- Milvus Lite 2.5.1 answers UNIMPLEMENTED to every alias call (create_alias,
  alter_alias, describe_alias, list_aliases) and to alter_collection_properties.
  So mmsearch keeps a small registry collection, ``mmsearch_registry``
  (VARCHAR key, VARCHAR JSON value, a 2-d dummy vector because Milvus requires
  one), with ``alias:<scene>`` -> ``{"collection", "history", "native"}`` rows
  and ``collection:<name>`` -> the collection's state (:func:`read_state`:
  the record, ``complete`` and ``count``, the corpus fingerprint
  ``corpus_sha256``, the sync ``generation`` and its ``changed`` ids, the
  ``evaluation`` figures and the ``published`` gate decision). A one-row upsert
  is the atomic alias switch. On a Milvus server (and milvus-lite 3.x) the
  native alias is set first, and is the truth there: :func:`resolve_collection`
  follows it (so a move made by another tool is followed too); on Milvus Lite
  2.5 the registry row is. Online code must call it (or :func:`read_manifest`,
  which returns ``collection``) and search the concrete collection.
- ``history`` lists the collections the alias pointed at before, newest
  first (at most :data:`HISTORY`): ``publish --rollback`` moves the alias back
  to the first of them that still exists and is complete.
- The state row is read, changed and written back (:func:`update_state`): the
  stages that write it for one collection run one after another (the operator
  runs one stage at a time), never concurrently.
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
import importlib.util
import json
import logging
import re
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Mapping, Sequence

import numpy as np

from mmsearch.core.errors import MmsearchError
from mmsearch.core.fields import KEYWORD_MAX_BYTES, SPARSE_FIELD, TEXT_FIELD, TEXT_MAX_BYTES, CollectionLayout
from mmsearch.core.redact import redact

REGISTRY = "mmsearch_registry"
HASH_FIELD = "content_sha256"  # per row: the hash of the corpus record it was built from
HASH_LENGTH = 64
HISTORY = 10  # previous targets an alias row remembers (for --rollback)
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


def documents_collection(template: str, collection: str) -> str:
    """The document (MongoDB) collection of Milvus collection ``collection``: ``template`` with
    ``{collection}`` replaced by its name, so summaries can be kept per version (serving's
    ``summary.collection`` and ``sync --collection`` take such templates). Pure."""
    return template.replace("{collection}", collection)


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
        if importlib.util.find_spec("milvus_lite") is None:
            raise MilvusStoreError(f"--milvus-uri {uri}: Milvus Lite is not installed here (the services image "
                                   "leaves it out); use a Milvus server URI such as http://milvus:19530")
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
        raise MilvusStoreError(f"cannot reach Milvus at {redact(uri)}: {short_error(exc)}") from None


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
        raise MilvusStoreError(f"Milvus at {redact(uri)} failed {doing}: {short_error(exc)}") from None
    finally:
        close(client, uri)


def short_error(exc: BaseException) -> str:
    """One line of at most 300 characters describing ``exc`` (pymilvus exceptions: their message),
    with any credentials in quoted URIs redacted."""
    text = redact(" ".join(str(getattr(exc, "message", None) or exc).split()))
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
    ensure_loaded(client, REGISTRY)


def ensure_loaded(client, name: str) -> None:
    """Load ``name`` unless it is loaded (searches need a loaded collection)."""
    state = client.get_load_state(name).get("state")
    if "Loaded" not in str(state):
        client.load_collection(name)


def registry_get(client, key: str) -> dict | None:
    if not client.has_collection(REGISTRY):
        return None
    ensure_loaded(client, REGISTRY)
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
    was created, its index, the manifest record of the model that built its vectors
    (:meth:`mmsearch.core.model_repository.ModelManifest.record`), and its layout: the filterable
    fields and the BM25 setup (:meth:`mmsearch.core.fields.CollectionLayout.record`; absent in
    records written before layouts, which read as none)."""

    scene: str
    version: str
    created_at: float
    index: dict
    manifest: dict
    fields: list = dataclasses.field(default_factory=list)
    lexical: dict | None = None

    @classmethod
    def new(cls, manifest: dict, scene: str, version: str, index: dict,
            layout: CollectionLayout | None = None) -> "CollectionRecord":
        recorded = (layout or CollectionLayout()).record()
        return cls(scene, str(version), time.time(), dict(index), dict(manifest), list(recorded.get("fields", [])),
                   recorded.get("lexical"))

    @property
    def layout(self) -> CollectionLayout:
        return CollectionLayout.from_record(self.fields, self.lexical)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, info) -> "CollectionRecord | None":
        if not isinstance(info, dict) or not isinstance(info.get("manifest"), dict):
            return None
        lexical = info.get("lexical")
        return cls(str(info.get("scene", "")), str(info.get("version", "")), float(info.get("created_at", 0)),
                   dict(info.get("index") or {}), dict(info["manifest"]), list(info.get("fields") or []),
                   dict(lexical) if isinstance(lexical, dict) else None)

    def to_description(self) -> str:
        return json.dumps({"mmsearch": self.to_dict()}, separators=(",", ":"))

    @classmethod
    def from_description(cls, description: str) -> "CollectionRecord | None":
        try:
            return cls.from_dict(json.loads(description or "").get("mmsearch"))
        except (ValueError, AttributeError):
            return None


def read_state(client, name: str) -> dict:
    """Collection ``name``'s registry row (see the module doc); ``{}`` when it has none."""
    return registry_get(client, f"collection:{name}") or {}


def update_state(client, name: str, **changes) -> dict:
    """Merge ``changes`` into collection ``name``'s registry row (None removes a key); returns the row."""
    state = read_state(client, name)
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    registry_put(client, f"collection:{name}", state)
    return state


def read_info(client, name: str) -> CollectionRecord | None:
    """Collection ``name``'s record: from its registry row, else its description (None: not made by mmsearch)."""
    record = CollectionRecord.from_dict(read_state(client, name).get("record"))
    if record is not None:
        return record
    return CollectionRecord.from_description(client.describe_collection(name).get("description") or "")


def _fields(client, name: str) -> dict[str, dict]:
    return {field.get("name"): field for field in client.describe_collection(name).get("fields", [])}


def _dimension(client, name: str) -> int | None:
    vector = _fields(client, name).get("vector")
    return int(vector.get("params", {}).get("dim")) if vector else None


def has_hashes(client, name: str) -> bool:
    """Whether collection ``name`` records a content hash per row (collections pushed before sync did not)."""
    return HASH_FIELD in _fields(client, name)


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
    """Create ``name`` (True) or check that the existing one fits (False): same dimension, model and layout."""
    from pymilvus import DataType, Function, FunctionType

    if client.has_collection(name):
        have = _dimension(client, name)
        if have != dimension:
            raise MilvusStoreError(f"dimension mismatch: collection {name} holds {have}-d vectors, these are "
                                   f"{dimension}-d; use a new --version for another model")
        old = read_info(client, name)
        ensure_loaded(client, name)
        if old is None and count(client, name) == 0:
            client.drop_collection(name)  # created by a run that died before recording it: start again
            return ensure_collection(client, name, dimension=dimension, index=index, info=info)
        if old is None:
            raise MilvusStoreError(f"collection {name} exists but was not made by mmsearch; "
                                   "use another --version or drop it")
        if not has_hashes(client, name):
            raise MilvusStoreError(f"collection {name} was pushed by an older mmsearch (no {HASH_FIELD} field); "
                                   "use a new --version")
        if old.manifest.get("onnx_sha256") != info.manifest.get("onnx_sha256"):
            raise MilvusStoreError(f"collection {name} was built with model {old.manifest.get('name')!r} "
                                   f"(onnx {str(old.manifest.get('onnx_sha256'))[:12]}), not this one; "
                                   "use a new --version")
        if old.layout != info.layout:
            raise MilvusStoreError(f"collection {name} was created with fields {old.layout.record()}, not "
                                   f"{info.layout.record()}; use a new --version for another layout")
        return False
    layout = info.layout
    schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                  description=info.to_description())
    schema.add_field("id", DataType.INT64, is_primary=True)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=int(dimension))
    schema.add_field(HASH_FIELD, DataType.VARCHAR, max_length=HASH_LENGTH)
    types = {"keyword": DataType.VARCHAR, "number": DataType.DOUBLE, "bool": DataType.BOOL}
    for spec in layout.fields:
        schema.add_field(spec.name, types[spec.type],
                         **({"max_length": KEYWORD_MAX_BYTES} if spec.type == "keyword" else {}))
    if layout.lexical is not None:
        schema.add_field(TEXT_FIELD, DataType.VARCHAR, max_length=TEXT_MAX_BYTES, enable_analyzer=True,
                         analyzer_params={"type": layout.lexical.analyzer})
        schema.add_field(SPARSE_FIELD, DataType.SPARSE_FLOAT_VECTOR)
        schema.add_function(Function(name="bm25", function_type=FunctionType.BM25, input_field_names=[TEXT_FIELD],
                                     output_field_names=[SPARSE_FIELD]))
    index_params = client.prepare_index_params()
    index_params.add_index("vector", index_type=index["type"], metric_type=index["metric"], params=index["params"])
    for spec in layout.fields:
        index_params.add_index(spec.name, index_type="INVERTED")
    if layout.lexical is not None:
        index_params.add_index(SPARSE_FIELD, index_type="SPARSE_INVERTED_INDEX", metric_type="BM25")
    client.create_collection(name, schema=schema, index_params=index_params)
    update_state(client, name, record=info.to_dict(), complete=False)
    ensure_loaded(client, name)
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


def upsert_rows(client, name: str, rows: list[dict]) -> None:
    """Upsert ``rows`` (each built by ``mmsearch.jobs.push_milvus.milvus_row``) into ``name``."""
    if rows:
        client.upsert(name, rows)


def delete_ids(client, name: str, ids: Iterable[int]) -> None:
    ids = [int(i) for i in ids]
    if ids:
        client.delete(name, ids=ids)


def read_hashes(client, name: str, batch_size: int = 5000) -> dict[int, str]:
    """``{id: content hash}`` of every row of ``name`` (one pass with a query iterator)."""
    iterator = client.query_iterator(name, batch_size=batch_size, filter="", output_fields=[HASH_FIELD],
                                     consistency_level="Strong")
    found: dict[int, str] = {}
    try:
        while True:
            rows = iterator.next()
            if not rows:
                break
            found.update((int(row["id"]), str(row.get(HASH_FIELD) or "")) for row in rows)
    finally:
        iterator.close()
    return found


def count(client, name: str) -> int:
    rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def mark_complete(client, name: str, n: int, **state) -> None:
    """Record that ``name`` holds all ``n`` rows (``publish`` requires it), with more ``state``."""
    update_state(client, name, complete=True, count=n, at=time.time(), **state)


def is_complete(client, name: str) -> bool:
    return bool(read_state(client, name).get("complete"))


# --- searching (the jobs' evaluate and serving's matcher send the same request) -----------------

Found = tuple[tuple[str, int, float], ...]
"""Per hit: (retriever, 1-based rank in that retriever's list, its score) for each retriever that found it."""


@dataclass(frozen=True)
class Matches:
    ids: np.ndarray            # int64 [n]
    scores: np.ndarray         # float32 [n]
    vectors: np.ndarray | None  # float32 [n, d]
    fields: Mapping[str, list] = dataclasses.field(default_factory=dict)  # output field -> one value per hit
    found_by: tuple[Found, ...] | None = None  # set by serving's match stage (one per hit)

    def __len__(self) -> int:
        return len(self.ids)

    def take(self, positions) -> "Matches":
        """These hits, in this order (``positions`` into this list)."""
        index = np.asarray(positions, dtype=np.int64)
        return Matches(self.ids[index], self.scores[index], None if self.vectors is None else self.vectors[index],
                       {name: [values[i] for i in index] for name, values in self.fields.items()},
                       None if self.found_by is None else tuple(self.found_by[i] for i in index))


def search_request(data, limit: int, *, metric: str, params: Mapping | None, with_vectors: bool,
                   anns_field: str = "vector", output_fields: Sequence[str] = (), expression: str = "") -> dict:
    """The keyword arguments of a ``search`` for every query of ``data``: the rows of vectors [n, d] on
    ``anns_field`` ``vector``, or texts on the BM25 ``sparse`` field. The field is always named: a
    collection with a BM25 field has two vector fields. ``expression`` is a compiled filter (serving's
    :mod:`mmsearch.services.serving.pipeline.filters`), ``output_fields`` the scalar fields to return."""
    if isinstance(data, np.ndarray) and data.dtype != object:
        data = np.asarray(data, dtype=np.float32).tolist()
    return {"data": list(data), "limit": int(limit), "anns_field": anns_field,
            "search_params": {"metric_type": metric, "params": dict(params or {})},
            "output_fields": (["vector"] if with_vectors else []) + list(output_fields), "filter": expression}


def matches(results, with_vectors: bool, output_fields: Sequence[str] = ()) -> list[Matches]:
    """One :class:`Matches` per query of a ``search`` answer (with the values of ``output_fields``)."""
    out = []
    for hits in results:
        ids = np.fromiter((h["id"] for h in hits), dtype=np.int64, count=len(hits))
        scores = np.fromiter((h["distance"] for h in hits), dtype=np.float32, count=len(hits))
        found = None
        if with_vectors:
            found = np.asarray([h["entity"]["vector"] for h in hits], dtype=np.float32).reshape(len(hits), -1)
        values = {name: [h["entity"].get(name) for h in hits] for name in output_fields}
        out.append(Matches(ids, scores, found, values))
    return out


def search(client, collection: str, vectors: np.ndarray, limit: int, *, metric: str = "IP",
           params: dict | None = None, with_vectors: bool = False, timeout: float | None = None) -> list[Matches]:
    """A blocking search of ``collection`` for every row of ``vectors`` (the request serving sends)."""
    request = search_request(vectors, limit, metric=metric, params=params, with_vectors=with_vectors)
    return matches(client.search(collection, timeout=timeout, **request), with_vectors)


# --- aliases ------------------------------------------------------------------------------------

def _alias_row(client, alias: str) -> dict:
    return registry_get(client, f"alias:{alias}") or {}


def _native_target(client, alias: str) -> str | None:
    """The collection a native alias points at; None where there is none (or no native aliases: an
    engine that answered UNIMPLEMENTED once is not asked again through this client)."""
    if getattr(client, "_mmsearch_no_aliases", False):
        return None
    try:
        return client.describe_alias(alias)["collection_name"]
    except Exception as exc:
        if _unimplemented(exc):
            client._mmsearch_no_aliases = True  # Milvus Lite 2.5: pymilvus would log every failed call
        return None


def set_alias(client, alias: str, collection: str, *, history: list[str] | None = None) -> str | None:
    """Point ``alias`` at ``collection`` in one step; returns the collection it pointed at before.

    Where the engine has native aliases (a Milvus server, milvus-lite 3.x) the native alias is
    moved first, then the registry row (``native: true``); on Milvus Lite 2.5 the registry row is
    the alias. The row's ``history`` gets the previous target in front, unless ``history`` is given
    (a rollback passes what remains)."""
    row = _alias_row(client, alias)
    previous = resolve_alias(client, alias, row)
    native = True
    try:
        try:
            client.describe_alias(alias)
            client.alter_alias(collection, alias)
        except Exception as exc:
            if _unimplemented(exc):
                raise
            client.create_alias(collection, alias)
    except Exception as exc:
        if not _unimplemented(exc):
            raise MilvusStoreError(f"cannot set alias {alias} -> {collection}: {short_error(exc)}") from None
        native = False  # Milvus Lite 2.5: the registry row is the alias
    if history is None:
        history = [c for c in [previous, *row.get("history", [])] if c and c != collection]
    registry_put(client, f"alias:{alias}", {"collection": collection, "at": time.time(), "native": native,
                                            "history": history[:HISTORY]})
    return previous


def rollback_choice(history: list[str], usable) -> tuple[str | None, list[str]]:
    """The first collection of ``history`` that ``usable(name)`` accepts, and the history after it. Pure."""
    for position, name in enumerate(history):
        if usable(name):
            return name, list(history[position + 1:])
    return None, []


def alias_history(client, alias: str) -> list[str]:
    """The collections ``alias`` pointed at before, newest first."""
    return list(_alias_row(client, alias).get("history", []))


def resolve_alias(client, alias: str, row: dict | None = None) -> str | None:
    """The collection ``alias`` points at (native alias where the row says it is set), or None."""
    row = _alias_row(client, alias) if row is None else row
    if row.get("native"):
        return _native_target(client, alias) or row.get("collection")
    return row.get("collection")


def alias_target(client, alias: str) -> str | None:
    return resolve_alias(client, alias)


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
    native = _native_target(client, name)
    if native:
        return native
    if client.has_collection(name):
        return name
    raise MilvusStoreError(f"no collection or alias named {name!r}: publish one with "
                           f"`mmsearch job publish --scene {name} --version V`")


STATE_FIELDS = ("count", "corpus_sha256", "generation", "changed", "evaluation", "published")


def read_manifest(client, collection_or_alias: str) -> dict:
    """The export manifest of the model that built the collection (alias resolved), plus
    ``collection`` (the concrete name to search), ``scene``, ``version``, ``index``, ``complete``,
    ``layout`` (the :meth:`~mmsearch.core.fields.CollectionLayout.record`: fields, lexical) and what
    its state records (:data:`STATE_FIELDS`; ``generation`` counts the syncs that changed it, 0 for
    none, and ``changed`` says which ids the last one changed)."""
    name = resolve_collection(client, collection_or_alias)
    state = read_state(client, name)
    info = CollectionRecord.from_dict(state.get("record")) or read_info(client, name)
    if info is None:
        raise MilvusStoreError(f"collection {name} records no model manifest (not built by `mmsearch job push-milvus`)")
    return {**info.manifest, "collection": name, "scene": info.scene, "version": info.version,
            "index": info.index, "complete": bool(state.get("complete")), "generation": 0,
            "layout": info.layout.record(), **{k: state[k] for k in STATE_FIELDS if k in state}}


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


