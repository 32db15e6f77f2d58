"""What a collection records, as read: which scene, version, model and layout built it.

The collection record (:class:`CollectionRecord`: scene, version,
created_at, index, the manifest of the model that built the vectors, and
``fields``/``lexical``, the layout) is written twice at creation: JSON
``{"mmsearch": ...}`` in the collection's description (for tools like Attu)
and in the collection's registry row, which is what mmsearch reads
(milvus-lite 3.x keeps no descriptions). A record written before layouts
existed reads as no fields and no BM25.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass

from mmsearch.core.fields import CollectionLayout
from mmsearch.core.milvus.connection import MilvusStoreError
from mmsearch.core.milvus.names import HASH_FIELD, REGISTRY
from mmsearch.core.milvus.registry import read_state, resolve_collection, writes_position

# What :func:`read_manifest` passes on from a collection's state.
STATE_FIELDS = ("count", "corpus_sha256", "generation", "changed", "evaluation", "published", "cutoff",
                "text_template", "text_field")


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


def read_info(client, name: str) -> CollectionRecord | None:
    """Collection ``name``'s record: from its registry row, else its description (None: not made by mmsearch)."""
    record = CollectionRecord.from_dict(read_state(client, name).get("record"))
    if record is not None:
        return record
    return CollectionRecord.from_description(client.describe_collection(name).get("description") or "")


def schema_fields(client, name: str) -> dict[str, dict]:
    """Collection ``name``'s fields as Milvus describes them, by name."""
    return {field.get("name"): field for field in client.describe_collection(name).get("fields", [])}


def has_hashes(client, name: str) -> bool:
    """Whether collection ``name`` records a content hash per row (collections pushed before sync did not)."""
    return HASH_FIELD in schema_fields(client, name)


def is_complete(client, name: str) -> bool:
    """Whether ``name`` was recorded as holding all its rows (``publish`` requires it)."""
    return bool(read_state(client, name).get("complete"))


def read_manifest(client, collection_or_alias: str) -> dict:
    """The export manifest of the model that built the collection (alias resolved), plus
    ``collection`` (the concrete name to search), ``scene``, ``version``, ``index``, ``complete``,
    ``layout`` (the :meth:`~mmsearch.core.fields.CollectionLayout.record`: fields, lexical) and what
    its state records (:data:`STATE_FIELDS`; ``generation`` counts the syncs that changed it, 0 for
    none, and ``changed`` says which ids the last one changed), and ``writes``, the write log position
    it has applied (live writes, :mod:`mmsearch.core.writelog`)."""
    name = resolve_collection(client, collection_or_alias)
    state = read_state(client, name)
    info = CollectionRecord.from_dict(state.get("record")) or read_info(client, name)
    if info is None:
        raise MilvusStoreError(f"collection {name} records no model manifest (not built by `mmsearch job push-milvus`)")
    return {**info.manifest, "collection": name, "scene": info.scene, "version": info.version,
            "index": info.index, "complete": bool(state.get("complete")), "generation": 0,
            "layout": info.layout.record(), "writes": writes_position(client, name),
            **{k: state[k] for k in STATE_FIELDS if k in state}}


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
