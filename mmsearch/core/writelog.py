"""The write log: every live write of a scene, ordered, and how a write reaches a collection.

The writer service (:mod:`mmsearch.services.writer`) records every upsert
and delete here before it touches a store, and ``publish`` (alias move and
rollback) replays the writes a version has not seen, so no acknowledged
write is lost to the index lifecycle.

Layout (MongoDB, database ``MMSEARCH_WRITER_LOG_DATABASE``):

- ``counters``: ``{_id: "writes", seq}``; one ``$inc`` hands out a batch's
  positions, so positions are unique and ordered across scenes and writers.
- ``writes``: one entry per item, ``_id`` = its position: ``scene``, ``op``
  (``upsert`` | ``delete``), ``id``, for an upsert the ``record`` (the
  document as a corpus record), its ``hash``, its ``vector`` (float32
  little-endian bytes) and ``model`` (the ``onnx_sha256`` that encoded it),
  for an image its bytes (``image``: a version built by another model
  re-encodes it from them);
  ``state`` ``pending`` until both stores hold it, then ``applied``.
- The Milvus registry row ``writes:<collection>`` says up to which position
  a collection has applied the log (:func:`applied_position`), which serving
  reads with the collection's state (a new position is a new cache key for
  its summary cache) and which replay starts from.

Applying (:func:`apply_entries`) is the one way an entry reaches a
collection: upserts write the summary first and the Milvus row second,
deletes the Milvus row first and the summary second, so a half-applied
entry never shows a vector without its summary; re-applying is idempotent
(by id, and an upsert whose row already carries its hash is skipped).
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Iterable, Sequence

import numpy as np

from mmsearch.core.documents import row_of
from mmsearch.core.errors import MmsearchError
from mmsearch.core.fields import CollectionLayout
from mmsearch.core.milvus.names import HASH_FIELD
from mmsearch.core.milvus.registry import writes_position
from mmsearch.core.milvus.registry_writes import registry_put
from mmsearch.core.milvus.rows import delete_ids, upsert_rows
from mmsearch.core.written import ENTRIES

COUNTERS = "counters"
PENDING, APPLIED = "pending", "applied"
MAX_ROUNDS = 100

# The vectors [n, dim] the target's document tower makes of upserts another model encoded (in their order).
Reencode = Callable[[list["Entry"]], np.ndarray]


class ReplayError(MmsearchError):
    """A replay that cannot finish: entries of another model and no tower to re-encode them, or no end."""


@dataclass(frozen=True)
class Entry:
    """One logged write (see the module doc)."""

    seq: int
    scene: str
    op: str
    id: int
    record: dict | None = None
    hash: str = ""
    vector: bytes = b""
    model: str = ""
    image: bytes = b""

    def to_doc(self) -> dict:
        return {"_id": self.seq, "scene": self.scene, "op": self.op, "id": self.id, "record": self.record,
                "hash": self.hash, "vector": self.vector, "model": self.model, "image": self.image,
                "state": PENDING, "at": time.time()}

    @classmethod
    def from_doc(cls, doc: dict) -> "Entry":
        return cls(int(doc["_id"]), doc["scene"], doc["op"], int(doc["id"]), doc.get("record"),
                   doc.get("hash") or "", bytes(doc.get("vector") or b""), doc.get("model") or "",
                   bytes(doc.get("image") or b""))

    def array(self) -> np.ndarray:
        return np.frombuffer(self.vector, dtype="<f4")


class WriteLog:
    """The log in database ``database`` of a pymongo client (see the module doc)."""

    def __init__(self, mongo, database: str):
        self.entries = mongo[database][ENTRIES]
        self.counters = mongo[database][COUNTERS]

    def ensure_indexes(self) -> None:
        """The indexes of the log's reads: a scene's pending entries (:meth:`pending`), and a scene's entries
        after a position (:meth:`since`, and serving's freshness rounds: ``mmsearch.core.written``). Without
        the second, each of those reads scanned every entry of the scene, vectors included: a cost per batch
        and per round that grew with the log."""
        self.entries.create_index([("scene", 1), ("state", 1)], name="scene_state")
        self.entries.create_index([("scene", 1), ("_id", 1)], name="scene_position")

    def reserve(self, n: int) -> int:
        """The first of ``n`` fresh consecutive positions."""
        from pymongo import ReturnDocument

        doc = self.counters.find_one_and_update({"_id": "writes"}, {"$inc": {"seq": n}}, upsert=True,
                                                return_document=ReturnDocument.AFTER)
        return int(doc["seq"]) - n + 1

    def append(self, entries: Sequence[Entry]) -> None:
        if entries:
            self.entries.insert_many([e.to_doc() for e in entries], ordered=True)

    def mark_applied(self, seqs: Iterable[int]) -> None:
        seqs = [int(s) for s in seqs]
        if seqs:
            self.entries.update_many({"_id": {"$in": seqs}}, {"$set": {"state": APPLIED}})

    def pending(self, scene: str) -> list[Entry]:
        """The scene's entries not yet applied, oldest first."""
        docs = self.entries.find({"scene": scene, "state": PENDING})
        return sorted((Entry.from_doc(d) for d in docs), key=lambda e: e.seq)

    def since(self, scene: str, position: int) -> list[Entry]:
        """The scene's entries after ``position``, oldest first (applied or not)."""
        docs = self.entries.find({"scene": scene, "_id": {"$gt": int(position)}})
        return sorted((Entry.from_doc(d) for d in docs), key=lambda e: e.seq)

    def position(self) -> int:
        """The last position handed out (0: none yet)."""
        doc = self.counters.find_one({"_id": "writes"})
        return int(doc["seq"]) if doc else 0


def latest(entries: Sequence[Entry]) -> list[Entry]:
    """The last entry of each id, in log order: what replaying ``entries`` must leave. Pure."""
    last: dict[int, Entry] = {}
    for entry in sorted(entries, key=lambda e: e.seq):
        last[entry.id] = entry
    return sorted(last.values(), key=lambda e: e.seq)


def applied_position(client, collection: str) -> int:
    """Up to which log position ``collection`` has applied the writes (0: none recorded)."""
    return writes_position(client, collection)


def record_position(client, collection: str, position: int) -> None:
    """Record that ``collection`` holds every write up to ``position`` (one row upsert, never lowered)."""
    if position > applied_position(client, collection):
        registry_put(client, f"writes:{collection}", {"position": int(position), "at": time.time()})


def summary_of(record: dict) -> dict:
    """The summary document of ``record``: the record plus ``_id`` = its id (push-mongo's contract). Pure."""
    return {"_id": int(record["id"]), **record}


def apply_entries(client, collection: str, documents, entries: Sequence[Entry], layout: CollectionLayout,
                  hashes: dict[int, str] | None = None) -> int:
    """Apply ``entries`` (oldest first; only the last of each id counts) to Milvus ``collection`` and the
    pymongo collection ``documents`` in the order the module doc gives; ``hashes``: ``{id: hash}`` the
    collection holds (upserts already there are skipped). Returns how many were written."""
    from pymongo import ReplaceOne

    todo = [e for e in latest(entries) if not (e.op == "upsert" and hashes is not None and hashes.get(e.id) == e.hash)]
    upserts = [e for e in todo if e.op == "upsert"]
    deletes = [e.id for e in todo if e.op == "delete"]
    if upserts:
        documents.bulk_write([ReplaceOne({"_id": e.id}, summary_of(e.record), upsert=True) for e in upserts],
                             ordered=True)
        upsert_rows(client, collection, [row_of(e.record, e.array(), layout) for e in upserts])
    if deletes:
        delete_ids(client, collection, deletes)
        documents.delete_many({"_id": {"$in": deletes}})
    return len(todo)


def held_hashes(client, collection: str, ids: Sequence[int]) -> dict[int, str]:
    """``{id: content hash}`` of the rows of ``ids`` that ``collection`` holds (strong consistency)."""
    ids = [int(i) for i in ids]
    if not ids:
        return {}
    rows = client.query(collection, filter=f"id in {ids}", output_fields=[HASH_FIELD], consistency_level="Strong")
    return {int(r["id"]): str(r.get(HASH_FIELD) or "") for r in rows}


def encoded_for(entries: Sequence[Entry], model: str, reencode: Reencode | None) -> list[Entry]:
    """``entries`` with every upsert that another model than ``model`` (an ``onnx_sha256``) encoded
    re-encoded by ``reencode``: a vector of another model in a collection would be found by nothing."""
    other = [e for e in entries if e.op == "upsert" and e.model != model]
    if not other:
        return list(entries)
    if reencode is None:
        raise ReplayError(f"{len(other)} logged writes were encoded by another model than the collection's: "
                          "they need its document tower (give the model repository)")
    vectors = np.asarray(reencode(other), dtype="<f4")
    fresh = {e.seq: replace(e, vector=v.tobytes(), model=model) for e, v in zip(other, vectors)}
    return [fresh.get(e.seq, e) for e in entries]


def replay(client, collection: str, documents, log: WriteLog, scene: str, layout: CollectionLayout, model: str,
           reencode: Reencode | None = None, *, after: int, settle: bool) -> tuple[int, int]:
    """Apply to Milvus ``collection`` (and its summaries ``documents``) ``scene``'s entries after position
    ``after`` (the last of each id, re-encoded by ``reencode`` when another model encoded them) and record
    the position reached. Returns (entries written, that position).

    ``settle``: another process (the writer) may be applying entries to ``collection`` meanwhile (the
    alias points at it, or it is the live version). Then a pass may put an older entry of an id over a newer
    one the writer has just applied; so the ids a pass wrote are replayed again, without the hash shortcut,
    while the log holds newer entries of them, until a pass finds none. Entries logged after the first pass
    read the log are the writer's own to apply (it resolves the alias after logging), so no acknowledged
    write ends older than its last entry. The position recorded is the one the first pass reached: a later
    pass applies only the ids it settles, so a batch logged meanwhile (which the writer may have applied to
    another version, if the alias moved before it resolved it) is not held by ``collection``. Refused after
    :data:`MAX_ROUNDS` passes (a client rewriting the same ids faster than a pass): run it again."""
    position, written, only, reached = int(after), 0, None, None
    for _ in range(MAX_ROUNDS):
        entries = log.since(scene, position)
        position = entries[-1].seq if entries else position
        reached = position if reached is None else reached
        if only is not None:
            entries = [e for e in entries if e.id in only]
        if not entries:
            break
        todo = encoded_for(latest(entries), model, reencode)
        held = held_hashes(client, collection, [e.id for e in todo]) if only is None else None
        written += apply_entries(client, collection, documents, todo, layout, held)
        if not settle:
            break
        only = {e.id for e in todo}
    else:
        raise ReplayError(f"replaying the write log of {scene} onto {collection}: the same ids were rewritten "
                          f"during {MAX_ROUNDS} passes; run it again")
    record_position(client, collection, reached)
    return written, reached


def describe(entries: Sequence[Any]) -> str:
    """``3 upserts, 1 delete`` of ``entries``. Pure."""
    ups = sum(1 for e in entries if e.op == "upsert")
    dels = len(entries) - ups
    return f"{ups} upsert{'s' * (ups != 1)}, {dels} delete{'s' * (dels != 1)}"
