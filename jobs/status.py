"""``mmsearch job status``: what a scene serves and how it measured, read from Milvus.

One JSON object on stdout: the alias, the live collection with its state
(model, documents, corpus fingerprint, sync generation, the figures of the
evaluation it was published on, whether the gate was forced), the versions
a rollback could go back to, and every kept version of the scene.
"""
from __future__ import annotations

import json

import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import MilvusToken, MilvusUri, Scene, TIMEOUT, Timeout
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.core.milvus.connection import session
from mmsearch.core.milvus.names import collection_name
from mmsearch.core.milvus.record import read_info, scene_collections
from mmsearch.core.milvus.registry import alias_history, read_state, resolve_alias


def _version(client, name: str) -> dict:
    state = read_state(client, name)
    record = read_info(client, name)
    return {"collection": name, "version": record.version if record else None,
            "model": record.manifest.get("name") if record else None,
            "complete": bool(state.get("complete")), "documents": state.get("count"),
            "corpus_sha256": state.get("corpus_sha256"), "generation": int(state.get("generation") or 0),
            "evaluation": state.get("evaluation"), "published": state.get("published")}


def scene_status(milvus_uri: str, scene: str, *, token: str = "", timeout: float = 10.0) -> dict:
    collection_name(scene, "1")  # checks the scene name
    with session(milvus_uri, f"while reading scene {scene}", token=token, timeout=timeout) as client:
        live = resolve_alias(client, scene)
        versions = [c["name"] for c in scene_collections(client, scene)]
        if live is None and not versions:
            raise JobError(f"scene {scene} has no collections in {milvus_uri}")
        kept = set(versions)
        return {"alias": scene, "live": _version(client, live) if live else None,
                "rollback_to": [c for c in alias_history(client, scene) if c in kept],
                "versions": [_version(client, name) for name in versions]}


@job_app.command("status")
def status_command(
    milvus_uri: MilvusUri,
    scene: Scene,
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
) -> None:
    """Print what scene <scene> serves (collection, documents, evaluation figures) and its kept versions."""
    with exit_on_error():
        print(json.dumps(scene_status(milvus_uri, scene, token=milvus_token, timeout=timeout), indent=2))
