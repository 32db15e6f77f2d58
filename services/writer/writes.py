"""The writer's work on the stores: upsert, delete, get and repair, one scene at a time.

Every call here blocks (pymilvus, pymongo, onnxruntime); the service runs
them in threads. Writes to one scene are serialized (a lock per scene), so
the write log's order is the order writes reach the stores.

An upsert batch (each step finished before the next):

1. check every item (:mod:`.items`), fetch image URLs, decode images; a
   refused item is reported and left out;
2. resolve the scene's live version (its alias, now) and bring it up to
   the log (:meth:`Writer._repair`: what an earlier batch left pending, and
   what the log holds past the position the version records);
3. drop the items whose content the version already holds (same id, same
   hash: ``unchanged``), encode the rest with the version's document tower;
4. append them to the write log (``pending``), resolve the alias again
   (a publish or rollback may have moved it: the version it points at now
   takes them, re-encoded by its own tower when another model built it),
   apply them (:func:`mmsearch.core.writelog.apply_entries`: summary, then
   row), mark them ``applied`` and record the version's log position;
5. answer: the batch is acknowledged only now.

A failure in 4 (a store down) answers UNAVAILABLE: what was logged stays
``pending`` and is re-applied by the next batch of that scene, by the
repair loop, or at the next start (:meth:`Writer.repair`). Deletes go the
same way (row, then summary); every id a delete names is logged, held or not
(a version the alias moves to may hold it).

Resolving the alias after logging is what lets ``publish`` promise that no
acknowledged write is lost: an entry logged before the alias moved is
visible to publish's replay after the move, and one logged after it is
applied here to the new target (:func:`mmsearch.core.writelog.replay`).
"""
from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Sequence

from mmsearch.core.documents import document_hash
from mmsearch.core.errors import MmsearchError
from mmsearch.core.image_preprocessing import ImageInputError, decode
from mmsearch.core.milvus.connection import ensure_loaded
from mmsearch.core.milvus.names import documents_collection
from mmsearch.core.milvus.record import read_info
from mmsearch.core.milvus.registry import read_state, resolve_alias
from mmsearch.core.text_template import embedded_template
from mmsearch.core.writelog import (
    Entry, WriteLog, applied_position, apply_entries, encoded_for, held_hashes, latest, record_position,
)
from mmsearch.services.writer.fetch import FetchRefused, fetch
from mmsearch.services.writer.items import Item, Refusal, Rules, check_document, duplicates, with_image
from mmsearch.services.writer.settings import WriterSettings
from mmsearch.services.writer.towers import Towers

APPLIED, UNCHANGED, REFUSED, NOT_FOUND = "applied", "unchanged", "refused", "not_found"
after_step: Callable[[str], None] | None = None  # tests: called after each step of a batch (a crash point)


class UnknownScene(MmsearchError):
    """A scene that takes no live writes here, or has no live version."""


@dataclass(frozen=True)
class Outcome:
    index: int
    id: int
    status: str
    field: str = ""
    reason: str = ""


@dataclass(frozen=True)
class Target:
    scene: str
    collection: str
    documents: object  # the pymongo collection of its summaries
    rules: Rules
    manifest: dict


def _model(target: Target) -> str:
    """The ``onnx_sha256`` of the tower that built ``target``'s vectors."""
    return str(target.manifest.get("onnx_sha256") or "")


def _forgets_on_failure(method):
    """``method(self, scene, ...)`` that forgets ``scene``'s kept target when it fails: after a store
    failed, or a version was repaired or rebuilt under the same name, the next batch reads it afresh."""
    @functools.wraps(method)
    def run(self, scene, *args, **kwargs):
        try:
            return method(self, scene, *args, **kwargs)
        except BaseException:
            self.targets.pop(scene, None)
            raise
    return run


def _step(name: str) -> None:
    if after_step is not None:
        after_step(name)


class Writer:
    """The stores, the log and the towers of one writer process."""

    def __init__(self, settings: WriterSettings, milvus, mongo):
        self.settings, self.milvus, self.mongo = settings, milvus, mongo
        self.log = WriteLog(mongo, settings.writes.log_database)
        self.towers = Towers(settings.model_repository, settings.writes.encoder_threads)
        self.locks = {scene: threading.Lock() for scene in settings.writer_scenes}
        self.targets: dict[str, Target] = {}  # per scene, while its alias points at the same collection
        self.fetchers = ThreadPoolExecutor(8, thread_name_prefix="writer-fetch")

    # ------------------------------------------------------------------ the scene's live version

    def target(self, scene: str) -> Target:
        """The scene's live version now: the alias is resolved on every call (one registry read); what
        the version's record gives (layout, manifest, template) is read once per collection the alias
        points at and kept (dropped when a batch fails: :func:`_forgets_on_failure`)."""
        where = self.settings.writer_scenes.get(scene)
        if where is None:
            known = ", ".join(sorted(self.settings.writer_scenes)) or "none"
            raise UnknownScene(f"unknown scene {scene!r}: this writer takes writes for {known} "
                               "(MMSEARCH_WRITER_SCENES)")
        name = resolve_alias(self.milvus, scene)
        kept = self.targets.get(scene)
        if kept is not None and kept.collection == name:
            return kept
        info = read_info(self.milvus, name) if name else None
        if info is None:
            raise UnknownScene(f"scene {scene!r} has no published version to write to: build and publish one")
        ensure_loaded(self.milvus, name)
        image = info.manifest.get("tower") == "image"
        template = None if image else embedded_template(read_state(self.milvus, name))
        limits = self.settings.limits
        rules = Rules(info.layout, template, image, limits.document_bytes, limits.image_bytes)
        documents = self.mongo[where.database][documents_collection(where.collection, name)]
        self.targets[scene] = Target(scene, name, documents, rules, info.manifest)
        return self.targets[scene]

    # ------------------------------------------------------------------ writes

    @_forgets_on_failure
    def upsert(self, scene: str, docs: Sequence[tuple]) -> tuple[str, int, list[Outcome]]:
        """``docs``: (id or None, fields, image bytes, image URL) each. (collection, log position, outcomes)."""
        target = self.target(scene)
        outcomes: dict[int, Outcome] = {}
        items: list[Item] = []
        repeated = duplicates([d[0] for d in docs])
        for index, (ident, fields, image, url) in enumerate(docs):
            if index in repeated:
                outcomes[index] = Outcome(index, ident, REFUSED, "id", "appears earlier in this batch: one write "
                                                                       "per id per batch")
                continue
            checked = check_document(index, ident, fields, image, url, target.rules)
            if isinstance(checked, Refusal):
                outcomes[index] = Outcome(checked.index, checked.id, REFUSED, checked.field, checked.reason)
            else:
                items.append(checked)
        if target.rules.image:
            items = self._images(items, outcomes)
        with self.locks[scene]:
            target = self.target(scene)  # the alias now: a publish may have moved it meanwhile
            self._repair(target)
            for item in items:
                item.hash = document_hash(item.record)
            held = held_hashes(self.milvus, target.collection, [i.id for i in items])
            changed = [i for i in items if held.get(i.id) != i.hash]
            for item in items:
                if held.get(item.id) == item.hash:
                    outcomes[item.index] = Outcome(item.index, item.id, UNCHANGED)
            position, collection = self._write(target, changed, self._vectors(target, changed))
            for item in changed:
                outcomes[item.index] = Outcome(item.index, item.id, APPLIED)
        return collection, position, [outcomes[i] for i in sorted(outcomes)]

    @_forgets_on_failure
    def delete(self, scene: str, ids: Sequence[int]) -> tuple[str, int, list[Outcome]]:
        with self.locks.get(scene) or threading.Lock():
            target = self.target(scene)
            self._repair(target)
            held = held_hashes(self.milvus, target.collection, ids)
            stored = {d["_id"] for d in target.documents.find({"_id": {"$in": [int(i) for i in ids]}}, {"_id": 1})}
            outcomes, gone = [], []
            for index, ident in enumerate(ids):
                if ident in held or ident in stored:
                    outcomes.append(Outcome(index, ident, APPLIED))
                    gone.append(ident)
                else:
                    outcomes.append(Outcome(index, ident, NOT_FOUND))
            asked = list(dict.fromkeys(int(i) for i in ids))  # every id: a version the alias moves to may hold it
            first = self.log.reserve(len(asked)) if asked else 0
            entries = [Entry(first + k, scene, "delete", i) for k, i in enumerate(asked)]
            position, collection = self._commit(target, entries)
        return collection, position, outcomes

    @_forgets_on_failure
    def get(self, scene: str, ids: Sequence[int]) -> tuple[str, list[dict], list[int]]:
        """(collection, documents of the ids the live version holds in both stores, missing ids)."""
        target = self.target(scene)
        held = held_hashes(self.milvus, target.collection, ids)
        docs = {d["_id"]: d for d in target.documents.find({"_id": {"$in": [int(i) for i in held]}})}
        found = [{**docs[i], "content_sha256": held[i]} for i in ids if i in docs]
        return target.collection, found, [i for i in ids if i not in docs]

    @_forgets_on_failure
    def repair(self, scene: str) -> int:
        """Re-apply what the scene's log left pending (at start, and by the repair loop)."""
        with self.locks[scene]:
            return self._repair(self.target(scene))

    # ------------------------------------------------------------------ steps

    def _images(self, items: list[Item], outcomes: dict[int, Outcome]) -> list[Item]:
        limits, writes = self.settings.limits, self.settings.writes

        def load(item: Item):
            try:
                data = item.image or fetch(item.url, max_bytes=limits.image_bytes, timeout=writes.fetch_timeout_seconds,
                                           allow_private=writes.allow_private_urls)
                image = decode(data, item.index, limits.image_bytes, limits.image_pixels, limits.image_aspect_ratio)
                return with_image(item, data), image
            except FetchRefused as exc:
                return Outcome(item.index, item.id, REFUSED, "image_url", f"{item.url}: {exc}"), None
            except ImageInputError as exc:
                reason = str(exc).replace(f"images[{item.index}]", "the image", 1)
                return Outcome(item.index, item.id, REFUSED, "image_url" if item.url else "image", reason), None

        kept = []
        for result, image in self.fetchers.map(load, items):
            if isinstance(result, Outcome):
                outcomes[result.index] = result
            else:
                result.extra["image"] = image
                kept.append(result)
        return kept

    def _vectors(self, target: Target, items: list[Item]):
        if not items:
            return []
        tower = self.towers.of(target.manifest)
        if target.rules.image:
            return tower.images([i.extra["image"] for i in items])
        return tower.texts(target.rules.template, [i.record for i in items])

    def _reencoder(self, target: Target):
        """The vectors ``target``'s own tower makes of logged upserts (another model encoded them)."""
        def reencode(entries: list[Entry]):
            tower = self.towers.of(target.manifest)
            if not target.rules.image:
                return tower.texts(target.rules.template, [e.record for e in entries])
            limits = self.settings.limits
            return tower.images([decode(e.image, e.id, limits.image_bytes, limits.image_pixels,
                                        limits.image_aspect_ratio) for e in entries])
        return reencode

    def _write(self, target: Target, items: list[Item], vectors) -> tuple[int, str]:
        if not items:
            return self.log.position(), target.collection
        first = self.log.reserve(len(items))
        entries = [Entry(first + k, target.scene, "upsert", item.id, item.record, item.hash,
                         vectors[k].astype("<f4").tobytes(), _model(target), item.image or b"")
                   for k, item in enumerate(items)]
        return self._commit(target, entries)

    def _commit(self, target: Target, entries: list[Entry]) -> tuple[int, str]:
        """Log, resolve the alias, apply, mark applied: (the last position, the collection written)."""
        if not entries:
            return self.log.position(), target.collection
        self.log.append(entries)
        _step("logged")
        now = self.target(target.scene)  # resolved after logging: see the module doc
        if now.collection != target.collection:  # moved meanwhile: bring the new target up to the log, batch included
            self._repair(now)
            _step("applied")
            return entries[-1].seq, now.collection
        apply_entries(self.milvus, target.collection, target.documents, entries, target.rules.layout)
        _step("applied")
        self.log.mark_applied(e.seq for e in entries)
        position = entries[-1].seq
        record_position(self.milvus, target.collection, position)
        return position, target.collection

    def _repair(self, target: Target) -> int:
        """Bring ``target`` up to the log: what earlier batches left pending, and every entry after the
        position it records (a version the alias has just moved to, or a publish that died before its
        replay after the move). Run under the scene's lock, so nothing newer can be logged meanwhile."""
        pending = self.log.pending(target.scene)
        behind = self.log.since(target.scene, applied_position(self.milvus, target.collection))
        entries = sorted({e.seq: e for e in pending + behind}.values(), key=lambda e: e.seq)
        if not entries:
            return 0
        todo = encoded_for(latest(entries), _model(target), self._reencoder(target))
        held = held_hashes(self.milvus, target.collection, [e.id for e in todo])
        done = apply_entries(self.milvus, target.collection, target.documents, todo, target.rules.layout, held)
        self.log.mark_applied(e.seq for e in pending)
        record_position(self.milvus, target.collection, entries[-1].seq)
        return done

    def close(self) -> None:
        self.fetchers.shutdown(wait=False, cancel_futures=True)
