"""A collection's schema and index: which index it gets, and creating it (or checking the one there).

- Index: ``auto`` by default (:func:`auto_index`: FLAT for small collections,
  IVF_FLAT from :data:`AUTO_INDEX` rows on, measured with bench/scale.py); an
  explicit type overrides it. Milvus Lite accepts only FLAT, IVF_FLAT and
  AUTOINDEX, so HNSW (or anything else) on a Lite URI is refused with a
  message saying so rather than silently swapped for another index.
- A rerun with another model, dimension or layout is refused instead of
  mixing vectors (:func:`ensure_collection`).
"""
from __future__ import annotations

from mmsearch.core.fields import KEYWORD_MAX_BYTES, SPARSE_FIELD, TEXT_FIELD, TEXT_MAX_BYTES
from mmsearch.core.milvus.connection import MilvusStoreError, ensure_loaded, is_lite
from mmsearch.core.milvus.names import HASH_FIELD
from mmsearch.core.milvus.record import CollectionRecord, has_hashes, read_info, schema_fields
from mmsearch.core.milvus.registry_writes import update_state
from mmsearch.core.milvus.rows import count
from mmsearch.core.model_repository import model_mismatch

HASH_LENGTH = 64
LITE_INDEXES = ("FLAT", "IVF_FLAT", "AUTOINDEX")
METRICS = ("IP", "COSINE", "L2")
DEFAULT_INDEX_PARAMS = {"HNSW": {"M": 16, "efConstruction": 200}, "IVF_FLAT": {"nlist": 128}}
# What ``--index-type auto`` (push-milvus's default) builds, from bench/scale.py on Milvus Lite 2.5.1
# (512-d unit vectors, 2 cores; the README has the table): FLAT below ``ivf_from_rows``, IVF_FLAT
# from there. Milvus Lite builds its own IVF index (128 lists, 16 probed) whatever nlist/nprobe say;
# these params are what a Milvus server is given, the same shape, and the search params are recorded
# in the collection's index so serving searches with them when an arm sets no match params.
AUTO_INDEX = {"ivf_from_rows": 100_000, "params": {"nlist": 128}, "search_params": {"nprobe": 16}}


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


def _dimension(client, name: str) -> int | None:
    vector = schema_fields(client, name).get("vector")
    return int(vector.get("params", {}).get("dim")) if vector else None


def ensure_collection(client, name: str, *, dimension: int, index: dict, info: CollectionRecord) -> bool:
    """Create ``name`` (True) or check that the existing one fits (False): same dimension, model and layout."""
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
        other_model = model_mismatch(old.manifest, info.manifest)
        if other_model:
            raise MilvusStoreError(f"collection {name} was built with {other_model}; "
                                   "use a new --version for another model")
        if old.layout != info.layout:
            raise MilvusStoreError(f"collection {name} was created with fields {old.layout.record()}, not "
                                   f"{info.layout.record()}; use a new --version for another layout")
        return False
    _create(client, name, dimension, index, info)
    update_state(client, name, record=info.to_dict(), complete=False)
    ensure_loaded(client, name)
    return True


def _create(client, name: str, dimension: int, index: dict, info: CollectionRecord) -> None:
    """Create ``name``: id, vector, content hash, the layout's fields and BM25 text, their indexes."""
    from pymilvus import DataType, Function, FunctionType

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
