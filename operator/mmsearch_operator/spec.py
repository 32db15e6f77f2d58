"""The IndexJob resource: identity, stage order and the spec with its defaults.

The CRD (charts/mmsearch/crds/indexjob.yaml) declares the same defaults, so a
real API server fills them in before the operator sees the object. The
operator applies them again here because it must not depend on that (an
object stored before a default was added, or an API emulator that does not
default); ``tests/operator/test_crd.py`` checks that both lists agree.
"""
from __future__ import annotations

import copy
from typing import Any

from mmsearch.core.model_repository import tower_name

GROUP = "mmsearch.io"
VERSION = "v1alpha1"
PLURAL = "indexjobs"
KIND = "IndexJob"
API_VERSION = f"{GROUP}/{VERSION}"

# The stages, in the order they run. One Kubernetes Job each.
STAGES: tuple[str, ...] = ("prepare", "export", "encode", "push-milvus", "push-mongo", "publish")

# Which stages' outputs each stage reads (drives "re-run from the first affected stage").
UPSTREAM: dict[str, tuple[str, ...]] = {
    "prepare": (),
    "export": (),
    "encode": ("prepare", "export"),
    "push-milvus": ("encode",),
    "push-mongo": ("prepare",),
    "publish": ("push-milvus", "push-mongo"),
}

# Defaults, path -> value: exactly the `default:` entries of the CRD schema. As in Kubernetes,
# a nested default applies only where its parent object exists (or has a default itself).
DEFAULTS: dict[tuple[str, ...], Any] = {
    ("imagePullPolicy",): "IfNotPresent",
    ("backoffLimit",): 2,
    ("ttlSecondsAfterFinished",): 86400,
    ("retry",): 0,
    ("skipStages",): [],
    ("encode",): {},
    ("publish",): {},
    ("volume", "mountPath"): "/data",
    ("model", "family"): "auto",
    ("model", "version"): 1,
    ("model", "maxBatchSize"): 64,
    ("encode", "batchSize"): 64,
    ("encode", "shards"): 1,
    ("encode", "textField"): "question",
    ("milvus", "indexType"): "auto",
    ("milvus", "metric"): "IP",
    ("milvus", "batchSize"): 1000,
    ("milvus", "tokenSecret", "key"): "token",
    ("mongo", "uriSecret", "key"): "uri",
    ("mongo", "database"): "mmsearch",
    ("mongo", "batchSize"): 1000,
    ("publish", "enabled"): True,
    ("publish", "keep"): 2,
}


def with_defaults(spec: dict[str, Any] | None) -> dict[str, Any]:
    """A deep copy of ``spec`` with the CRD's defaults applied the way the API server applies them."""
    out = copy.deepcopy(spec or {})
    for path, value in sorted(DEFAULTS.items(), key=lambda item: len(item[0])):  # parents first
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.setdefault(path[-1], copy.deepcopy(value))
    return out


def skipped_stages(spec: dict[str, Any]) -> set[str]:
    """Stages the spec skips: ``skipStages`` plus ``publish`` when ``publish.enabled`` is false."""
    skipped = set(spec.get("skipStages") or [])
    if not spec.get("publish", {}).get("enabled", True):
        skipped.add("publish")
    return skipped


def document_model(spec: dict[str, Any]) -> str:
    """The tower that encodes documents: ``NAME-image`` for image corpora, ``NAME`` for text."""
    return tower_name(spec["model"]["name"], "image" if spec["modality"] == "image" else "text")


def mongo_collection(spec: dict[str, Any]) -> str:
    """The MongoDB collection: ``mongo.collection``, or the scene name when it is not set."""
    return spec.get("mongo", {}).get("collection") or spec["scene"]
