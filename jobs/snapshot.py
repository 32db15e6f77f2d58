"""``mmsearch job snapshot``: a published version, whole, to S3 or a folder, with a checksum per part.

A snapshot is a folder (``s3://bucket/prefix`` or a path) of parts and one
``manifest.json`` written last:

- ``collection.json``: the collection record (scene, version, index, layout,
  the model manifest) and its registry state (count, corpus fingerprint, sync
  generation, evaluation figures, publish decision);
- ``model.json``: the manifest of the model that built the vectors (which
  tower serves its queries: a restore refuses nothing about it, serving
  checks it against its model repository);
- ``rows-NNNNN.jsonl``: the Milvus rows, ``--part-rows`` a part: id, vector,
  content hash, the layout's scalar fields and the BM25 text (the sparse
  BM25 vectors are not stored: Milvus's BM25 function computes them from the
  text on insert, so a restore gets the same);
- ``summaries-NNNNN.jsonl``: the MongoDB summary documents, as MongoDB
  Extended JSON (canonical: types survive the trip).

``manifest.json`` names every part with its kind, records and bytes and its
SHA-256, the counts of both stores, the scene, the collection and the write
log position the collection had applied (live writes after it are replayed
by whatever replays the write log, from that position; see
:func:`mmsearch.jobs.restore.restore`). Written last, so a snapshot cut short
has no manifest and a restore says so. Decisions:

- ``--keep N`` then deletes the snapshots in the parent folder of ``--to``
  beyond the newest N (the operator's retention: one folder per IndexJob).
- The version snapshotted is the one the scene's alias points at, or
  ``--version``; it must be complete (push-milvus finished).
- Rows are read with a query iterator (strong consistency) in id order as
  Milvus returns them; the count read must equal the collection's recorded
  count, and the summaries are counted too, so a snapshot taken while a sync
  writes is refused rather than inconsistent: run it between runs (the
  operator never runs a snapshot beside a sync of the same IndexJob).
"""
from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

import typer

from mmsearch.core import artifacts
from mmsearch.core.milvus.connection import ensure_loaded, session
from mmsearch.core.milvus.names import collection_name, documents_collection
from mmsearch.core.milvus.record import is_complete, read_info, schema_fields
from mmsearch.core.milvus.registry import read_state, resolve_alias, writes_position
from mmsearch.core.fields import SPARSE_FIELD
from mmsearch.jobs.app import job_app
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.options import (Collection, Database, MilvusToken, MilvusUri, MongoUri, Scene, TIMEOUT, Timeout,
                                   Version)
from mmsearch.jobs.progress import check_summary_file, emit, write_summary_file
from mmsearch.jobs.push_mongo import connect

FORMAT = 1
MANIFEST = "manifest.json"
PART_ROWS = 10_000


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class Writer:
    """Writes the parts of a snapshot at ``location`` and remembers what it wrote."""

    location: str
    parts: list[dict[str, Any]] = field(default_factory=list)

    def put(self, name: str, kind: str, data: bytes, records: int) -> None:
        artifacts.write_bytes(artifacts.join(self.location, name), data)
        self.parts.append({"name": name, "kind": kind, "records": records, "bytes": len(data), "sha256": sha256(data)})

    def put_lines(self, prefix: str, kind: str, lines: Iterator[str], per_part: int) -> int:
        """``lines`` cut into parts of ``per_part`` records: ``<prefix>-00000.jsonl`` ...; the count."""
        total, batch = 0, []
        for line in lines:
            batch.append(line)
            if len(batch) >= per_part:
                self.put(f"{prefix}-{len(self._of(kind)):05d}.jsonl", kind, ("\n".join(batch) + "\n").encode(), len(batch))
                total, batch = total + len(batch), []
        if batch or not self._of(kind):
            self.put(f"{prefix}-{len(self._of(kind)):05d}.jsonl", kind,
                     ("\n".join(batch) + "\n").encode() if batch else b"", len(batch))
            total += len(batch)
        return total

    def _of(self, kind: str) -> list[dict[str, Any]]:
        return [p for p in self.parts if p["kind"] == kind]


def row_fields(client, name: str) -> list[str]:
    """The fields of ``name``'s rows that a snapshot keeps: all but the BM25 function's output."""
    return [f for f in schema_fields(client, name) if f != SPARSE_FIELD]


def read_rows(client, name: str, fields: list[str], batch_size: int = 1000) -> Iterator[dict[str, Any]]:
    iterator = client.query_iterator(name, batch_size=batch_size, filter="", output_fields=fields,
                                     consistency_level="Strong")
    try:
        while True:
            rows = iterator.next()
            if not rows:
                return
            for row in rows:
                yield {key: (list(map(float, value)) if key == "vector" else value)
                       for key, value in dict(row).items() if key in fields}
    finally:
        iterator.close()


def snapshot(milvus_uri: str, scene: str, to: str, *, mongo_uri: str, database: str = "mmsearch",
             collection: str | None = None, version: str | None = None, part_rows: int = PART_ROWS,
             token: str = "", timeout: float = 10.0) -> dict[str, Any]:
    """Write the published version of ``scene`` (or ``version``) to ``to``; returns the manifest."""
    from bson import json_util

    if part_rows < 1:
        raise JobError(f"--part-rows {part_rows}: must be at least 1")
    if artifacts.exists(artifacts.join(to, MANIFEST)):
        raise JobError(f"--to {to}: a snapshot is there already ({MANIFEST}); give a new location")
    with session(milvus_uri, f"while snapshotting scene {scene}", token=token, timeout=timeout) as client:
        name = collection_name(scene, version) if version else resolve_alias(client, scene)
        if name is None:
            raise JobError(f"scene {scene} has no published version: give --version")
        if not client.has_collection(name) or not is_complete(client, name):
            raise JobError(f"collection {name} does not exist or is not complete (push-milvus did not finish)")
        record, state = read_info(client, name), read_state(client, name)
        if record is None:
            raise JobError(f"collection {name} was not made by mmsearch: nothing records its model and layout")
        ensure_loaded(client, name)
        out = Writer(to)
        out.put("collection.json", "collection", json.dumps({"record": record.to_dict(), "state": state},
                                                            sort_keys=True, default=str).encode(), 1)
        out.put("model.json", "model", json.dumps(record.manifest, sort_keys=True).encode(), 1)
        fields = row_fields(client, name)
        rows = out.put_lines("rows", "rows", (json.dumps(r, sort_keys=True) for r in read_rows(client, name, fields)),
                             part_rows)
        position = writes_position(client, name)
    if rows != int(state.get("count") or 0):
        raise JobError(f"collection {name} holds {rows} rows, its state records {state.get('count')}: is a sync "
                       "writing it? snapshot it between runs")
    summaries = documents_collection(collection or scene, name)
    mongo = connect(mongo_uri, timeout)
    try:
        docs = mongo[database][summaries]
        expected = docs.count_documents({})
        written = out.put_lines("summaries", "summaries",
                                (json_util.dumps(d, json_options=json_util.CANONICAL_JSON_OPTIONS)
                                 for d in docs.find({}, sort=[("_id", 1)])), part_rows)
    finally:
        mongo.close()
    if written != expected:
        raise JobError(f"MongoDB collection {database}.{summaries} changed while it was read ({expected} then "
                       f"{written} documents): snapshot it between runs")
    manifest = {"format": FORMAT, "scene": scene, "collection": name, "version": record.version,
                "created_at": time.time(), "rows": rows, "summaries": written, "writes_position": position,
                "mongo": {"database": database, "collection": summaries, "template": collection or scene},
                "parts": out.parts}
    artifacts.write_bytes(artifacts.join(to, MANIFEST), json.dumps(manifest, indent=1, sort_keys=True).encode())
    return manifest


def prune(parent: str, keep: int) -> list[str]:
    """Delete the snapshots in folder ``parent`` beyond the newest ``keep`` (by their manifest's time);
    the names deleted. The manifest goes first, so one half deleted reads as cut short, never as whole.
    Folders without a manifest (a snapshot being written, or cut short) are left alone."""
    if keep < 1:
        raise JobError(f"--keep {keep}: keep at least 1 snapshot (the one just taken)")
    names = sorted({p.split("/")[0] for p in artifacts.list_files(parent) if p.count("/") == 1 and p.endswith(f"/{MANIFEST}")})
    dated = []
    for name in names:
        try:
            dated.append((float(json.loads(artifacts.read_bytes(artifacts.join(parent, name, MANIFEST)))["created_at"]), name))
        except (ValueError, KeyError, TypeError):
            continue  # not ours: left alone
    dropped = [name for _, name in sorted(dated)[:-keep]]
    for name in dropped:
        artifacts.delete(artifacts.join(parent, name, MANIFEST))
        for path in artifacts.list_files(artifacts.join(parent, name)):
            artifacts.delete(artifacts.join(parent, name, path))
    return dropped


@job_app.command("snapshot")
def snapshot_command(
    milvus_uri: MilvusUri,
    scene: Scene,
    mongo_uri: MongoUri,
    to: str = typer.Option(..., "--to", envvar="MMSEARCH_SNAPSHOT_URI",
                           help="Where the snapshot goes: s3://bucket/prefix or a folder (a new one)."),
    version: Version = None,
    database: Database = "mmsearch",
    collection: Collection = None,
    part_rows: int = typer.Option(PART_ROWS, envvar="MMSEARCH_PART_ROWS", help="Rows (and summaries) per part."),
    keep: int = typer.Option(None, envvar="MMSEARCH_KEEP",
                             help="Then keep only the newest N snapshots in --to's parent folder (older ones deleted)."),
    summary_file: str = typer.Option(None, envvar="MMSEARCH_SUMMARY_FILE", help="Also write the outcome JSON here."),
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
) -> None:
    """Write the published version of <scene> (vectors, fields, BM25 text, summaries, records) to --to."""
    with exit_on_error():
        check_summary_file(summary_file)
        if keep is not None and keep < 1:
            raise JobError(f"--keep {keep}: keep at least 1 snapshot (the one taken now)")
        manifest = snapshot(milvus_uri, scene, to, mongo_uri=mongo_uri, database=database, collection=collection,
                            version=version, part_rows=part_rows, token=milvus_token, timeout=timeout)
        outcome = {"snapshot": to, "collection": manifest["collection"], "rows": manifest["rows"],
                   "summaries": manifest["summaries"], "parts": len(manifest["parts"])}
        if keep is not None:
            outcome["pruned"] = prune(to.rstrip("/").rsplit("/", 1)[0], keep)
        write_summary_file(summary_file, outcome)
        emit("snapshot", "done", **outcome)
