"""``mmsearch job publish``: point the scene's alias at ``<scene>_<version>`` and prune old versions.

Decisions:
- Only a collection that push-milvus finished (its count check passed and it
  was marked complete) can be published: readers never see a half-built index.
- The switch is one step: one registry row upsert (the alias on Milvus Lite,
  which has no native aliases) plus the native ``create_alias``/``alter_alias``
  on a Milvus server; see :mod:`mmsearch.core.milvus_store`.
- "The last N versions" are the scene's N most recently pushed collections
  (by the push time recorded in each collection); the one now published is
  always kept too (after a rollback to an older version that makes N + 1);
  every other collection of the scene is dropped. Only collections whose recorded scene is
  this scene are considered (so scene ``a`` never drops ``a_b_1`` of scene
  ``a_b``), and a collection that another native alias still points at is kept.
"""
from __future__ import annotations

import sys

import typer

from mmsearch.core import milvus_store
from mmsearch.core.redact import redact
from jobs.app import job_app
from jobs.errors import JobError, exit_on_error
from jobs.progress import emit


def versions_to_drop(collections: list[dict], published: str, keep: int) -> list[str]:
    """Names to drop from the scene's ``collections`` (oldest first): all but the newest ``keep``
    and ``published`` (a rollback to an older version keeps it besides the newest ``keep``)."""
    kept = {c["name"] for c in collections[-keep:]} | {published}
    return [c["name"] for c in collections if c["name"] not in kept]


def publish(milvus_uri: str, scene: str, version: str, *, keep: int = 2, token: str = "", timeout: float = 10.0) -> dict:
    """Alias ``scene`` -> ``scene_version``; returns ``{alias, collection, previous, dropped}``."""
    if keep < 1:
        raise JobError(f"--keep {keep}: must be at least 1 (the published version)")
    name = milvus_store.collection_name(scene, version)
    with milvus_store.session(milvus_uri, f"while publishing {name}", token=token, timeout=timeout) as client:
        if not client.has_collection(name):
            raise JobError(f"collection {name} does not exist in {redact(milvus_uri)}: run push-milvus "
                           f"--scene {scene} --version {version} first")
        if not milvus_store.is_complete(client, name):
            raise JobError(f"collection {name} is not complete (push-milvus did not finish); re-run push-milvus")
        previous = milvus_store.alias_target(client, scene)
        milvus_store.set_alias(client, scene, name)
        dropped = []
        for old in versions_to_drop(milvus_store.scene_collections(client, scene), name, keep):
            try:
                if client.list_aliases(old).get("aliases"):
                    print(f"warning: keeping {old}: a native alias still points at it", file=sys.stderr)
                    continue
            except Exception:
                pass  # Milvus Lite: no native aliases to check
            milvus_store.drop_collection(client, old)
            dropped.append(old)
    return {"alias": scene, "collection": name, "previous": previous, "dropped": dropped}


@job_app.command("publish")
def publish_command(
    milvus_uri: str = typer.Option(..., envvar="MMSEARCH_MILVUS_URI", help="A Milvus Lite file or http(s)://host:port."),
    scene: str = typer.Option(..., envvar="MMSEARCH_SCENE"),
    version: str = typer.Option(..., envvar="MMSEARCH_VERSION"),
    keep: int = typer.Option(2, envvar="MMSEARCH_KEEP", help="Versions of the scene to keep, the published one included."),
    milvus_token: str = typer.Option("", envvar="MMSEARCH_MILVUS_TOKEN", help="Milvus server token (user:password)."),
    timeout: float = typer.Option(10.0, envvar="MMSEARCH_TIMEOUT", help="Seconds to wait for a Milvus server."),
) -> None:
    """Point alias <scene> at <scene>_<version> in one step; drop versions beyond --keep."""
    with exit_on_error():
        summary = publish(milvus_uri, scene, version, keep=keep, token=milvus_token, timeout=timeout)
        emit("publish", "done", **summary)
