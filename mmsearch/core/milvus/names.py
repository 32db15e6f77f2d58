"""The names mmsearch gives in Milvus: collections, their document collections, the registry. Pure."""
from __future__ import annotations

import re

from mmsearch.core.milvus.connection import MilvusStoreError

REGISTRY = "mmsearch_registry"  # the collection of states and aliases (:mod:`mmsearch.core.milvus.registry`)
HASH_FIELD = "content_sha256"  # per row: the hash of the corpus record it was built from
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VERSION = re.compile(r"^[A-Za-z0-9_]+$")


def collection_name(scene: str, version: str) -> str:
    """``<scene>_<version>``; MilvusStoreError naming the flag for a scene or version Milvus would refuse."""
    if not _NAME.match(scene or "") or scene == REGISTRY:
        raise MilvusStoreError(f"--scene {scene!r}: use letters, digits and underscores, starting with a letter")
    if not _VERSION.match(str(version or "")):
        raise MilvusStoreError(f"--version {version!r}: use letters, digits and underscores (e.g. 3 or 20240601)")
    return f"{scene}_{version}"


def documents_collection(template: str, collection: str) -> str:
    """The document (MongoDB) collection of Milvus collection ``collection``: ``template`` with
    ``{collection}`` replaced by its name, so summaries can be kept per version (serving's
    ``summary.collection`` and ``sync --collection`` take such templates)."""
    return template.replace("{collection}", collection)
