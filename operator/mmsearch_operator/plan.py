"""Deterministic identities of a run: stage fingerprints, workdir, Job names, collection version.

Decisions:
- **Fingerprints.** Each stage's fingerprint hashes the spec fields the stage
  reads plus the fingerprints of the stages whose outputs it reads
  (:data:`spec.UPSTREAM`). A spec change re-runs exactly the stages whose
  fingerprint changed, i.e. from the first affected stage on; fields that only
  say *how* to run (image, env, resources, backoff, ``retry``) change no
  fingerprint.
- **Workdir.** Stage artifacts (corpus, vector shards) live under
  ``<spec.workdir>/<namespace>/<name>/<data key>``, where the data key hashes
  everything that determines the vectors (source, model, encode settings).
  Encode skips finished shards on a re-run, so vectors made by another model
  must never be found there: a change to any of these starts a fresh folder,
  and ``prepare`` re-runs with it (it is cheap). Changes to Milvus, MongoDB or
  publish settings reuse the folder.
- **Job names** are ``<name>-<stage>-<8 hex>``, the hex hashing the object's
  identity (namespace, name, uid), the stage, the generation the stage was
  launched at and its fingerprint. Re-creating the same Job after an operator
  restart hits the same name (409 = already there); a relaunch for a new
  generation gets a new name, so a finished Job is never mistaken for it.
- **Collection version** ``v<generation>_<8 hex of uid>``: chosen when
  push-milvus is launched and recorded in status. A new generation that
  re-runs push-milvus builds a new collection beside the one the alias serves;
  the uid part keeps a deleted-and-recreated IndexJob (whose generation starts
  again at 1) from writing into a collection an older object built.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any

from mmsearch.operator.spec import STAGES, UPSTREAM, mongo_collection

MAX_NAME = 40  # IndexJob names: Job names (<name>-push-milvus-<8 hex>) must fit 63 characters.


def digest(value: Any) -> str:
    """Hex SHA-256 of ``value`` as canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _pick(spec: dict[str, Any], section: str, *keys: str) -> dict[str, Any]:
    part = spec.get(section) or {}
    return {k: part.get(k) for k in keys}


def _encode_inputs(spec: dict[str, Any]) -> dict[str, Any]:
    # the text template: only when set, so specs without one keep their fingerprints
    return _pick(spec, "encode", "batchSize", "shards", "textField") | {
        k: v for k, v in _pick(spec, "encode", "textTemplate").items() if v}


def stage_inputs(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec fields each stage reads (its own inputs, without upstream stages)."""
    return {
        "prepare": {"source": spec.get("source"), "modality": spec.get("modality"), "data": data_key(spec)},
        "export": _pick(spec, "model", "source", "name", "repository", "family", "version", "maxBatchSize")
        | {"s3": (spec.get("s3") or {}).get("endpointUrl")},
        "encode": _encode_inputs(spec) | {"modality": spec.get("modality")},
        "push-milvus": _pick(spec, "milvus", "uri", "indexType", "metric", "indexParams", "batchSize")
        | {"scene": spec.get("scene")}
        # the layout: only when set, so specs without one keep their fingerprints
        | {k: v for k, v in _pick(spec, "milvus", "fields", "bm25").items() if v},
        "push-mongo": _pick(spec, "mongo", "uri", "uriSecret", "database", "batchSize")
        | {"collection": mongo_collection(spec)},
        "evaluate": {"scene": spec.get("scene"), "milvus": (spec.get("milvus") or {}).get("uri")}
        | _pick(spec, "evaluation", "queries", "k"),
        "publish": {"scene": spec.get("scene"), "milvus": (spec.get("milvus") or {}).get("uri"),
                    "keep": (spec.get("publish") or {}).get("keep")}
        # the gate: fields of spec.evaluation only when it is set, so specs without one keep their fingerprints
        | ({"gate": dict(spec["evaluation"])} if spec.get("evaluation") else {})
        # what a restore builds: only in mode restore, so other specs keep their fingerprints
        | ({"restore": spec.get("restore")} if spec.get("mode") == "restore" else {}),
        "sync": {"scene": spec.get("scene"), "milvus": (spec.get("milvus") or {}).get("uri")}
        | _pick(spec, "mongo", "uri", "uriSecret", "database", "batchSize") | {"collection": mongo_collection(spec)},
        "restore": {"scene": spec.get("scene"), "milvus": (spec.get("milvus") or {}).get("uri"),
                    "from": (spec.get("restore") or {}).get("from")}
        | _pick(spec, "mongo", "uri", "uriSecret", "database") | {"collection": mongo_collection(spec)},
    }


def fingerprints(spec: dict[str, Any]) -> dict[str, str]:
    """Stage name -> fingerprint (hex), chained through :data:`spec.UPSTREAM`."""
    inputs = stage_inputs(spec)
    out: dict[str, str] = {}
    for stage in STAGES:  # STAGES is in dependency order
        out[stage] = digest({"stage": stage, "inputs": inputs[stage],
                             "upstream": {u: out[u] for u in UPSTREAM[stage]}})
    return out


def data_key(spec: dict[str, Any]) -> str:
    """12 hex characters naming the run's workdir folder (see the module docs)."""
    return digest({
        "source": spec.get("source"),
        "modality": spec.get("modality"),
        "model": _pick(spec, "model", "source", "name", "repository", "family", "version"),
        "encode": _encode_inputs(spec),
        "s3": (spec.get("s3") or {}).get("endpointUrl"),
    })[:12]


def run_workdir(spec: dict[str, Any], namespace: str, name: str) -> str:
    """``<spec.workdir>/<namespace>/<name>/<data key>`` (a path or an s3:// URI)."""
    return f"{spec['workdir'].rstrip('/')}/{namespace}/{name}/{data_key(spec)}"


def _identity(meta: dict[str, Any]) -> str:
    return f"{meta.get('namespace', '')}/{meta['name']}/{meta.get('uid', '')}"


def job_name(meta: dict[str, Any], stage: str, generation: int, fingerprint: str, run: int = 0) -> str:
    """``<name>-<stage>-<8 hex>``: deterministic for (object, stage, launch generation, inputs, and the
    scheduled run when there is one: each run of ``spec.schedule`` gets Jobs of its own)."""
    h = digest([_identity(meta), stage, generation, fingerprint] + ([run] if run else []))[:8]
    return f"{meta['name']}-{stage}-{h}"


def collection_version(meta: dict[str, Any], generation: int) -> str:
    """``v<generation>_<8 hex>`` (the Milvus collection is ``<scene>_<version>``)."""
    uid = str(meta.get("uid") or "").replace("-", "")
    tag = uid[:8] if uid else digest(_identity(meta))[:8]
    return f"v{generation}_{tag}"
