"""``mmsearch job restore``: a new version built from a snapshot (:mod:`mmsearch.jobs.snapshot`), checked,
and published on request.

Decisions:

- Everything is checked before anything is written: the manifest (absent: the
  snapshot was cut short or the location is wrong), then every part it names,
  read whole: a missing part, a checksum or a record count that differs from
  the manifest is refused naming the part. The parts are read again when
  loaded and their checksums checked again (a location that changes under a
  restore is refused the same way).
- The new collection is ``<scene>_<version>`` (``--version``, a new one: an
  existing collection is refused), created with the snapshot's record (index,
  layout, model manifest) under the new scene and version; the rows go in by
  upsert in batches (a rerun after a crash ends the same), the BM25 vectors
  are computed by Milvus from the text as on any insert. The count must equal
  the manifest's; then the collection is marked complete with the state it
  had (corpus fingerprint, sync generation, evaluation figures) and
  ``restored_from`` (the snapshot and the collection it was).
- The summaries go to ``--collection`` (default: the snapshot's template, so
  ``{collection}`` names the new collection's own) in ``--database``,
  inserted or replaced by ``_id``; their count is checked too.
- Live writes: the collection records the write log position the snapshot
  had applied (:func:`mmsearch.core.writelog.record_position`), so the replay
  of the write log (publish replays what a version has not seen) starts from
  there. Restoring into a cluster whose write log is gone replays nothing.
- ``--publish`` points the scene's alias at the restored version
  (:func:`mmsearch.jobs.publish.publish`, without a gate: the snapshot was of
  a version that was published).
"""
from __future__ import annotations

import json
import re
from typing import Any, Iterator

import typer

from mmsearch.core import artifacts
from mmsearch.core.milvus.connection import session
from mmsearch.core.milvus.names import collection_name, documents_collection
from mmsearch.core.milvus.record import CollectionRecord
from mmsearch.core.milvus.rows import count, mark_complete, upsert_rows
from mmsearch.core.milvus.schema import ensure_collection
from mmsearch.core.writelog import record_position
from mmsearch.jobs.app import job_app
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.options import (Collection, Database, MilvusToken, MilvusUri, MongoUri, Scene, TIMEOUT, Timeout,
                                   Version)
from mmsearch.jobs.progress import check_summary_file, emit, write_summary_file
from mmsearch.jobs.publish import publish
from mmsearch.jobs.push_mongo import connect, write_batch
from mmsearch.jobs.snapshot import FORMAT, MANIFEST, sha256

BATCH = 1000  # rows a Milvus upsert (Milvus Lite slows sharply beyond)
PART_NAME = re.compile(r"^(collection|model)\.json$|^(rows|summaries)-[0-9]{5}\.jsonl$")


def read_manifest(location: str) -> dict[str, Any]:
    """The snapshot's manifest; JobError when it is absent or not one."""
    uri = artifacts.join(location, MANIFEST)
    if not artifacts.exists(uri):
        raise JobError(f"--from {location}: no {MANIFEST}: not a snapshot, or one cut short (the manifest is "
                       "written last); take it again")
    try:
        manifest = json.loads(artifacts.read_bytes(uri))
        parts = manifest["parts"]
    except (ValueError, KeyError, TypeError):
        parts = None
    if not isinstance(parts, list) or not all(isinstance(p, dict) and isinstance(p.get("name"), str) for p in parts):
        raise JobError(f"--from {location}: {MANIFEST} is damaged (not the JSON `mmsearch job snapshot` writes)")
    odd = [p["name"] for p in parts if not PART_NAME.match(p["name"])]
    if odd:
        raise JobError(f"--from {location}: {MANIFEST} names a part {odd[0]!r} that `mmsearch job snapshot` never "
                       "writes: the manifest is damaged")
    if manifest.get("format") != FORMAT:
        raise JobError(f"--from {location}: snapshot format {manifest.get('format')!r}, this mmsearch reads {FORMAT}")
    kinds = {p.get("kind") for p in parts}
    missing = {"collection", "model", "rows", "summaries"} - kinds
    if missing:
        raise JobError(f"--from {location}: {MANIFEST} names no {', '.join(sorted(missing))} part: the manifest is damaged")
    return manifest


def read_part(location: str, part: dict[str, Any]) -> bytes:
    """A part's bytes, checked against the manifest; JobError naming the part."""
    name, uri = part["name"], artifacts.join(location, part["name"])
    if not artifacts.exists(uri):
        raise JobError(f"snapshot {location}: part {name} is missing; the snapshot is incomplete, take it again")
    data = artifacts.read_bytes(uri)
    if sha256(data) != part.get("sha256"):
        raise JobError(f"snapshot {location}: part {name} is damaged: its SHA-256 is {sha256(data)}, the manifest "
                       f"says {part.get('sha256')}")
    records = data.count(b"\n") if name.endswith(".jsonl") else 1
    if records != part.get("records"):
        raise JobError(f"snapshot {location}: part {name} holds {records} records, the manifest says "
                       f"{part.get('records')}")
    return data


def verify(location: str, manifest: dict[str, Any]) -> None:
    """Every part present and intact, the totals as the manifest says (JobError naming the first that is not)."""
    for part in manifest["parts"]:
        read_part(location, part)
    for kind, key in (("rows", "rows"), ("summaries", "summaries")):
        total = sum(p.get("records") or 0 for p in manifest["parts"] if p.get("kind") == kind)
        if total != manifest.get(key):
            raise JobError(f"snapshot {location}: its {kind} parts hold {total} records, the manifest says "
                           f"{manifest.get(key)}")


def _lines(location: str, manifest: dict[str, Any], kind: str) -> Iterator[str]:
    for part in manifest["parts"]:
        if part.get("kind") == kind:
            yield from filter(None, read_part(location, part).decode().split("\n"))


def _one(location: str, manifest: dict[str, Any], kind: str) -> Any:
    part = next(p for p in manifest["parts"] if p.get("kind") == kind)
    return json.loads(read_part(location, part))


def restore(location: str, milvus_uri: str, scene: str, version: str, *, mongo_uri: str, database: str = "mmsearch",
            collection: str | None = None, publish_it: bool = False, keep: int = 2, token: str = "",
            timeout: float = 10.0) -> dict[str, Any]:
    """Build ``<scene>_<version>`` from the snapshot at ``location`` (see the module docs)."""
    from bson import json_util

    manifest = read_manifest(location)
    verify(location, manifest)
    saved = _one(location, manifest, "collection")
    old = CollectionRecord.from_dict(saved.get("record"))
    if old is None or _one(location, manifest, "model") != old.manifest:
        raise JobError(f"snapshot {location}: collection.json and model.json disagree on the model: the snapshot is damaged")
    state = saved.get("state") or {}
    name = collection_name(scene, version)
    record = CollectionRecord.new(old.manifest, scene, version, old.index, old.layout)
    dimension = int(old.manifest.get("dimension") or 0)
    with session(milvus_uri, f"while restoring {name}", token=token, timeout=timeout) as client:
        if client.has_collection(name):
            raise JobError(f"collection {name} exists already: restore into a new --version")
        ensure_collection(client, name, dimension=dimension, index=old.index, info=record)
        batch: list[dict] = []
        for line in _lines(location, manifest, "rows"):
            batch.append(json.loads(line))
            if len(batch) >= BATCH:
                upsert_rows(client, name, batch)
                batch = []
        upsert_rows(client, name, batch)
        rows = count(client, name)
        if rows != manifest["rows"]:
            raise JobError(f"collection {name} holds {rows} rows after the restore, the snapshot has {manifest['rows']}")
        kept = {k: state[k] for k in ("corpus_sha256", "generation", "changed", "evaluation", "text_template", "cutoff")
                if k in state}
        mark_complete(client, name, rows, restored_from={"snapshot": location, "collection": manifest["collection"]},
                      **kept)
        record_position(client, name, int(manifest.get("writes_position") or 0))  # live writes replay from here
    summaries = documents_collection(collection or manifest["mongo"]["template"], name)
    mongo = connect(mongo_uri, timeout)
    try:
        target = mongo[database][summaries]
        batch = []
        for line in _lines(location, manifest, "summaries"):
            batch.append(json_util.loads(line))
            if len(batch) >= BATCH:
                write_batch(target, batch)
                batch = []
        if batch:
            write_batch(target, batch)
        held = target.count_documents({})
    finally:
        mongo.close()
    if held < manifest["summaries"]:
        raise JobError(f"MongoDB collection {database}.{summaries} holds {held} documents after the restore, the "
                       f"snapshot has {manifest['summaries']}")
    out = {"collection": name, "restored_from": manifest["collection"], "rows": rows, "summaries": manifest["summaries"],
           "mongo": f"{database}.{summaries}", "writes_position": int(manifest.get("writes_position") or 0)}
    if publish_it:
        out["published"] = publish(milvus_uri, scene, version, keep=keep, token=token, timeout=timeout)
    return out


@job_app.command("restore")
def restore_command(
    milvus_uri: MilvusUri,
    scene: Scene,
    mongo_uri: MongoUri,
    version: Version = None,
    source: str = typer.Option(..., "--from", envvar="MMSEARCH_SNAPSHOT_URI",
                               help="The snapshot: s3://bucket/prefix or a folder `mmsearch job snapshot` wrote."),
    database: Database = "mmsearch",
    collection: Collection = None,
    publish_it: bool = typer.Option(False, "--publish", envvar="MMSEARCH_PUBLISH",
                                    help="Point the scene's alias at the restored version."),
    keep: int = typer.Option(2, envvar="MMSEARCH_KEEP", help="With --publish: versions of the scene to keep."),
    summary_file: str = typer.Option(None, envvar="MMSEARCH_SUMMARY_FILE", help="Also write the outcome JSON here."),
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
) -> None:
    """Build <scene>_<version> from a snapshot (checked part by part), optionally publish it."""
    with exit_on_error():
        if not version:
            raise JobError("--version is required: the restored collection is <scene>_<version>, a new one")
        check_summary_file(summary_file)
        outcome = restore(source, milvus_uri, scene, version, mongo_uri=mongo_uri, database=database,
                          collection=collection, publish_it=publish_it, keep=keep, token=milvus_token, timeout=timeout)
        write_summary_file(summary_file, outcome)
        emit("restore", "done", **outcome)
