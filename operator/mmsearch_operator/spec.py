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

# Every stage, in dependency order. One Kubernetes Job each.
STAGES: tuple[str, ...] = ("prepare", "export", "encode", "push-milvus", "push-mongo", "evaluate", "publish", "sync",
                           "restore")

# The stages each spec.mode runs, in the order they run: a full build into a new version (evaluate
# runs when spec.evaluation names a query set), a sync of the live version in place, or a new version
# restored from a snapshot (spec.restore) and published.
MODES: dict[str, tuple[str, ...]] = {
    "full": ("prepare", "export", "encode", "push-milvus", "push-mongo", "evaluate", "publish"),
    "incremental": ("prepare", "sync"),
    "restore": ("restore", "publish"),
}

# How the gate's thresholds are called in an IndexJob (its messages name these fields).
GATE_NAMES = {"min_recall": "spec.evaluation.minRecall", "max_regression": "spec.evaluation.maxRegression",
              "max_p99_ms": "spec.evaluation.maxP99Ms"}

# Which stages' outputs each stage reads (drives "re-run from the first affected stage").
UPSTREAM: dict[str, tuple[str, ...]] = {
    "prepare": (),
    "export": (),
    "encode": ("prepare", "export"),
    "push-milvus": ("encode",),
    "push-mongo": ("prepare",),
    "evaluate": ("push-milvus", "push-mongo"),
    "publish": ("push-milvus", "push-mongo"),  # and the evaluation, through its inputs (plan.stage_inputs)
    "sync": ("prepare",),
    "restore": (),
}

# Defaults, path -> value: exactly the `default:` entries of the CRD schema. As in Kubernetes,
# a nested default applies only where its parent object exists (or has a default itself).
DEFAULTS: dict[tuple[str, ...], Any] = {
    ("mode",): "full",
    ("imagePullPolicy",): "IfNotPresent",
    ("backoffLimit",): 2,
    ("ttlSecondsAfterFinished",): 86400,
    ("retry",): 0,
    ("rollback",): 0,
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
    ("milvus", "bm25", "analyzer"): "english",
    ("milvus", "tokenSecret", "key"): "token",
    ("mongo", "uriSecret", "key"): "uri",
    ("mongo", "database"): "mmsearch",
    ("mongo", "writeLogDatabase"): "mmsearch",
    ("mongo", "batchSize"): 1000,
    ("publish", "enabled"): True,
    ("publish", "keep"): 2,
    ("evaluation", "k"): 10,
    ("evaluation", "maxRegression"): 0.05,
    ("evaluation", "force"): False,
    ("schedule", "concurrencyPolicy"): "Allow",
    ("schedule", "suspend"): False,
    ("schedule", "successfulRunsHistoryLimit"): 3,
    ("schedule", "failedRunsHistoryLimit"): 1,
    ("snapshots", "keep"): 3,
    ("snapshots", "request"): 0,
}


# The fields of spec, as the CRD schema declares them: a nested dict per object with fixed
# properties, None for a value (or an open map / list the schema leaves free).
# tests/operator/test_crd.py checks that this is the CRD's tree. The API server prunes unknown
# fields (a typo such as `encode.shard: 4` silently becomes 1 shard) unless the client asks for
# strict field validation (kubectl's default, --validate=strict); the operator refuses any it
# sees (an emulator, an API server that kept them), naming the path.
_SECRET_REF = {"name": None, "key": None}
_RESOURCES = {"limits": None, "requests": None}
FIELDS: dict[str, Any] = {
    "scene": None, "modality": None, "image": None, "imagePullPolicy": None, "imagePullSecrets": None,
    "serviceAccountName": None, "workdir": None,
    "volume": {"claimName": None, "mountPath": None},
    "source": {"kind": None, "uri": None, "baseUrl": None, "ocr": {"engine": None, "timeoutSeconds": None},
               "frames": {"everySeconds": None, "sceneThreshold": None},
               "fields": {"question": None, "answer": None, "category": None, "id": None}},
    "model": {"source": None, "name": None, "repository": None, "family": None, "version": None,
              "maxBatchSize": None},
    "encode": {"batchSize": None, "shards": None, "parallelism": None, "textField": None, "textTemplate": None,
               "resources": _RESOURCES, "nodeSelector": None, "tolerations": None},
    "resources": _RESOURCES,
    "milvus": {"uri": None, "indexType": None, "metric": None, "indexParams": None, "batchSize": None,
               "fields": None, "bm25": {"fields": None, "analyzer": None}, "tokenSecret": _SECRET_REF},
    "mongo": {"uri": None, "uriSecret": _SECRET_REF, "database": None, "collection": None, "batchSize": None,
              "writeLogDatabase": None},
    "s3": {"endpointUrl": None, "region": None, "credentialsSecret": None},
    "env": None,
    "publish": {"enabled": None, "keep": None},
    "mode": None,
    "evaluation": {"queries": None, "k": None, "minRecall": None, "maxRegression": None, "maxP99Ms": None,
                   "force": None},
    "skipStages": None, "backoffLimit": None, "ttlSecondsAfterFinished": None, "activeDeadlineSeconds": None,
    "retry": None, "rollback": None,
    "schedule": {"cron": None, "concurrencyPolicy": None, "suspend": None, "startingDeadlineSeconds": None,
                 "successfulRunsHistoryLimit": None, "failedRunsHistoryLimit": None},
    "snapshots": {"location": None, "cron": None, "keep": None, "request": None},
    "restore": {"from": None},
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


def mode_stages(spec: dict[str, Any]) -> tuple[str, ...]:
    """The stages of ``spec.mode`` (see :data:`MODES`), in order."""
    return MODES[spec.get("mode") or "full"]


def skipped_stages(spec: dict[str, Any]) -> set[str]:
    """Stages the spec skips: ``skipStages``, ``publish`` when ``publish.enabled`` is false, and
    ``evaluate`` without ``spec.evaluation``."""
    skipped = set(spec.get("skipStages") or [])
    if not spec.get("publish", {}).get("enabled", True):
        skipped.add("publish")
    if not spec.get("evaluation"):
        skipped.add("evaluate")
    return skipped


def document_model(spec: dict[str, Any]) -> str:
    """The tower that encodes documents: ``NAME-image`` for image corpora, ``NAME`` for text."""
    return tower_name(spec["model"]["name"], "image" if spec["modality"] == "image" else "text")


def mongo_collection(spec: dict[str, Any]) -> str:
    """The MongoDB collection: ``mongo.collection``, or the scene name when it is not set. It may
    say ``{collection}`` for the Milvus collection's name (summaries kept per version)."""
    return spec.get("mongo", {}).get("collection") or spec["scene"]
