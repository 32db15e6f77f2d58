"""``mmsearch job sync``: update a published version in place from a newly prepared corpus.

Sync compares ``<workdir>/corpus.jsonl`` with what the collection holds, by
id and by the content hash recorded in every row (``content_sha256``, see
:func:`mmsearch.jobs.push_milvus.milvus_row`): new and changed documents are encoded and
upserted into Milvus and MongoDB, documents gone from the corpus are deleted
from both, and the corpus fingerprint is recorded in the collection's state.
The target is the version the scene's alias points at (``--version`` names
another one); ``--collection`` names the MongoDB collection, where
``{collection}`` stands for the target's name (summaries kept per version, as
serving's ``summary.collection: "{collection}"`` reads them).

Decisions:
- One way to update in place: this stage (the full build stays prepare ->
  encode -> push-milvus -> push-mongo -> publish into a new version).
- Refused when the collection was built by another model than ``--model``
  (its recorded manifest's ``onnx_sha256``), or asked to embed other text than
  the collection records (``--text-field`` / ``--text-template`` against its
  ``text_template``, see :mod:`mmsearch.core.text_template`): mixing vectors of
  two models, or of two texts, in one collection would corrupt it; that needs
  a full rebuild into a new version. Without either flag sync embeds what the
  collection records. Refused for collections pushed before rows
  carried hashes.
- Crash-safe by order, not by a journal: the diff is computed afresh on every
  run from what Milvus holds, and each batch writes MongoDB first and Milvus
  second, so a Milvus row with the new hash means its document is done (a
  document is re-sent by a rerun until its row is). Deletions go the same way
  (MongoDB, then Milvus). A SIGKILL at any point followed by a rerun ends in
  exactly the state one clean run gives.
- What changed is recorded for serving's caches in the collection's state:
  before the first write, ``pending`` (the ids this run will touch); at the end,
  ``generation`` + 1 and ``changed`` = ``{generation, upserted, deleted, at}``
  (``pending`` of a run that died is folded in; id lists longer than
  :data:`MAX_RECORDED_IDS` are recorded as null, meaning "assume every id
  changed"). A sync that finds nothing to change leaves the generation alone.
  :func:`mmsearch.core.milvus.record.read_manifest` returns both.
- Rows are built like push-milvus builds them (:func:`mmsearch.jobs.push_milvus.milvus_row`),
  with the layout the collection records (its filterable fields and BM25 text):
  a new or changed record that lacks a declared number or bool field is
  refused, naming it, before anything is written.
- Images: the record carries its file's SHA-256 (``prepare``), so an image whose
  file changed is re-encoded. An image that cannot be fetched or decoded is
  skipped with a warning (as encode does): its document is written, its row
  deleted, and the next sync tries it again.
- The final check: Milvus holds exactly the corpus's encodable documents and
  MongoDB every corpus document and none of the removed ones (both with the
  live writes applied, below).
- Live writes win over the corpus (:mod:`mmsearch.jobs.replay`): an id the
  scene's write log names (``--writes-database``) is left out of the plan,
  neither rewritten from the corpus nor deleted; and once sync's own rows
  are written, every entry logged since it read the collection is replayed
  onto it, settling against the writer, so a write that arrived while sync
  ran is never undone by the corpus's older copy.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import (
    BatchSize, Collection, Database, Device, MilvusToken, MilvusUri, Model, ModelRepositoryUri, MongoUri,
    OnnxThreads, Scene, TIMEOUT, TextField, TextTemplate, Timeout, Version, Workdir,
)
from mmsearch.jobs.corpus import document_hash, read_corpus
from mmsearch.jobs.encode import ImageInputs, TextInputs, encode_records, load_encoder
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.progress import Progress
from mmsearch.jobs.replay import LogAccess, Replayer
from mmsearch.jobs.push_milvus import milvus_row, milvus_rows
from mmsearch.jobs.push_mongo import batched, connect as mongo_connect, redact, write_batch
from mmsearch.core.milvus.connection import ensure_loaded, session
from mmsearch.core.milvus.names import collection_name, documents_collection
from mmsearch.core.milvus.record import has_hashes, read_info
from mmsearch.core.milvus.registry import read_state, resolve_alias
from mmsearch.core.milvus.registry_writes import update_state
from mmsearch.core.milvus.rows import count, delete_ids, mark_complete, read_hashes, upsert_rows
from mmsearch.core.fields import CollectionLayout
from mmsearch.core.model_repository import ModelManifest, ModelRepository, model_mismatch
from mmsearch.core.writelog import latest
from mmsearch.core.text_template import (
    DEFAULT_FIELD, TemplateError, choose_template, field_template, recorded_template,
)

MAX_RECORDED_IDS = 2000


@dataclass(frozen=True)
class SyncPlan:
    new: list[int]
    changed: list[int]
    removed: list[int]

    @property
    def upserts(self) -> list[int]:
        return self.new + self.changed


def plan_sync(corpus: dict[int, str], live: dict[int, str]) -> SyncPlan:
    """What to write, from ``{id: hash}`` of the corpus (in corpus order) and of the collection. Pure."""
    return SyncPlan(new=[i for i in corpus if i not in live],
                    changed=[i for i, h in corpus.items() if i in live and live[i] != h],
                    removed=sorted(i for i in live if i not in corpus))


def merged(*lists: list[int] | None) -> list[int] | None:
    """The ids of ``lists`` as the state records them: sorted, or None (too many, or one is None)."""
    if any(ids is None for ids in lists):
        return None
    ids = sorted({i for ids in lists for i in ids})
    return ids if len(ids) <= MAX_RECORDED_IDS else None


def _target(client, milvus_uri: str, scene: str, version: str | None) -> str:
    """The collection to sync: ``scene_version``, or the one the scene's alias points at."""
    if version:
        name = collection_name(scene, version)
        if not client.has_collection(name):
            raise JobError(f"collection {name} does not exist in {milvus_uri}")
        return name
    collection_name(scene, "1")  # checks the scene name
    name = resolve_alias(client, scene)
    if not name:
        raise JobError(f"scene {scene} has no published version to sync: build one (prepare, encode, "
                       "push-milvus, push-mongo, publish) first")
    return name


def asked_template(text_field: str | None, text_template: str | None) -> tuple[str, str] | None:
    """(the flag and value given, the template they ask for), None when neither flag is; JobError naming it."""
    try:
        template = choose_template(text_field, text_template)
    except TemplateError as exc:
        raise JobError(str(exc)) from None
    if template is None:
        return None
    return (f"--text-template {text_template!r}" if text_template else f"--text-field {text_field!r}"), template


def _check_target(client, name: str, scene: str, manifest: ModelManifest,
                  asked: tuple[str, str] | None) -> tuple[str | None, CollectionLayout]:
    """Refuse what sync cannot update (see the module doc); the text template to embed (None: images)
    and the collection's layout (the fields and BM25 text every row it writes carries)."""
    record = read_info(client, name)
    if record is None:
        raise JobError(f"collection {name} was not made by mmsearch; sync cannot update it")
    other_model = model_mismatch(record.manifest, manifest.record())
    if other_model:
        raise JobError(f"the live version {name} of scene {scene} was built by {other_model} (--model): sync "
                       "cannot mix two models' vectors; pass the --model that built it, or do a full rebuild "
                       "(encode, push-milvus and push-mongo into a new --version, then publish)")
    if not has_hashes(client, name):
        raise JobError(f"collection {name} was pushed before rows carried content hashes: sync cannot tell "
                       "what changed; rebuild it into a new --version once")
    built = recorded_template(read_state(client, name))
    if asked and built and asked[1] != built:
        raise JobError(f"{asked[0]}: collection {name} embeds {built!r}; sync must embed the same text "
                       "(omit --text-field and --text-template), or rebuild")
    template = asked[1] if asked else built or field_template(DEFAULT_FIELD)
    return template if manifest.tower == "text" else None, record.layout


def _check_documents(mongo_uri: str, database: str, documents: str, name: str, timeout: float) -> None:
    """Refuse a MongoDB collection that does not exist (a wrong --collection or --database) before
    anything is written: writing would create it, holding only this run's changes."""
    import pymongo

    mongo = mongo_connect(mongo_uri, timeout)
    try:
        exists = documents in mongo[database].list_collection_names()
    except pymongo.errors.PyMongoError as exc:
        raise JobError(f"MongoDB at {redact(mongo_uri)} failed: {str(exc).splitlines()[0][:300]}") from None
    finally:
        mongo.close()
    if not exists:
        raise JobError(f"MongoDB collection {database}.{documents} does not exist: sync updates the summaries "
                       f"push-mongo wrote for {name}; pass the --collection and --database push-mongo used")


def _apply(client, name: str, target, plan: SyncPlan, records: dict[int, dict], layout: CollectionLayout,
           encode_with, batch_size: int, where: str, progress: Progress | None) -> list[int]:
    """Write ``plan`` batch by batch, MongoDB ``target`` first, then Milvus; returns the unreadable ids."""
    failed: list[int] = []
    encoder = inputs = None
    for batch in batched((records[i] for i in plan.upserts), batch_size):
        if encoder is None:
            encoder, inputs = encode_with()
        ids, vectors, bad = encode_records(encoder, inputs, batch, batch_size)
        write_batch(target, [{"_id": r["id"], **r} for r in batch])
        upsert_rows(client, name, milvus_rows(records, ids, vectors, layout, where))
        delete_ids(client, name, bad)  # unreadable now: a row of its old file would be stale
        failed.extend(bad)
        if progress is not None:
            progress.update(len(batch))
    for batch in batched(plan.removed, batch_size):
        target.delete_many({"_id": {"$in": batch}})
        delete_ids(client, name, batch)
        if progress is not None:
            progress.update(len(batch))
    return failed


def sync(workdir: str, milvus_uri: str, mongo_uri: str, scene: str, repository: str, model: str, *,
         collection: str, version: str | None = None, database: str = "mmsearch",
         text_field: str | None = None, text_template: str | None = None, batch_size: int = 256,
         device: str = "auto", threads: int = 0, writes_database: str = "mmsearch",
         token: str = "", timeout: float = 10.0, progress: Progress | None = None) -> dict:
    """Bring the live version of ``scene`` (or ``scene_version``) in line with the corpus; returns a summary."""
    import pymongo

    if batch_size < 1:
        raise JobError(f"--batch-size {batch_size}: must be at least 1")
    corpus = read_corpus(workdir)
    if not corpus.records:
        raise JobError(f"empty corpus in {workdir}: sync would delete every document; check the source")
    records = corpus.by_id()
    manifest = ModelRepository(repository).manifest(model)
    asked = asked_template(text_field, text_template)

    def encode_with():
        encoder = load_encoder(repository, model, device=device, threads=threads)
        return encoder, TextInputs(encoder, template) if encoder.tower == "text" else ImageInputs(encoder)

    with session(milvus_uri, f"while syncing scene {scene}", token=token, timeout=timeout) as client:
        name = _target(client, milvus_uri, scene, version)
        template, layout = _check_target(client, name, scene, manifest, asked)
        state = read_state(client, name)
        ensure_loaded(client, name)
        replayer = Replayer(LogAccess(mongo_uri, writes_database, database, collection, repository, timeout),
                            client, scene, name)
        start = replayer.position()  # read before the hashes: what the writer applies later is replayed below
        owned = {e.id for e in replayer.log.since(scene, 0)}  # ids the live writes own (see the module doc)
        plan = plan_sync({r["id"]: document_hash(r) for r in corpus.records if r["id"] not in owned},
                         {i: h for i, h in read_hashes(client, name).items() if i not in owned})
        documents = documents_collection(collection, name)
        for i in plan.upserts:  # a record without a field the collection declares: refused before any write
            milvus_row(records[i], [], layout)
        _check_documents(mongo_uri, database, documents, name, timeout)
        pending = state.get("pending")
        if plan.upserts or plan.removed:  # recorded before the first write (see the module doc)
            before = pending or {"upserted": [], "deleted": []}
            pending = {"upserted": merged(before["upserted"], plan.upserts),
                       "deleted": merged(before["deleted"], plan.removed)}
            update_state(client, name, pending=pending)
        if progress is not None:
            progress.total = len(plan.upserts) + len(plan.removed)
        mongo = mongo_connect(mongo_uri, timeout)
        try:
            target = mongo[database][documents]
            target.create_index("id", unique=True, name="id_unique")
            failed = _apply(client, name, target, plan, records, layout, encode_with, batch_size, workdir, progress)
            replayed, _ = replayer.run(after=start, settle=True)
            live = {e.id: e.op for e in latest(replayer.log.since(scene, 0))}
            stored = {doc["_id"] for doc in target.find({}, {"_id": 1}).batch_size(10000)}
        except pymongo.errors.PyMongoError as exc:
            raise JobError(f"MongoDB at {redact(mongo_uri)} failed: {str(exc).splitlines()[0][:300]}") from None
        finally:
            mongo.close()
            replayer.close()
        expected = ({i for i in records if i not in live and i not in failed}
                    | {i for i, op in live.items() if op == "upsert"})
        missing = sum(1 for i in records if i not in stored and live.get(i) != "delete")
        stale = sum(1 for i in plan.removed if i in stored)
        if missing or stale:
            raise JobError(f"count check failed: {database}.{documents} lacks {missing} corpus documents and still "
                           f"holds {stale} removed ones; re-run sync")
        found = count(client, name)
        if found != len(expected):
            raise JobError(f"count check failed: collection {name} holds {found} entities, expected "
                           f"{len(expected)} (the corpus with the live writes); re-run sync")
        generation = int(state.get("generation") or 0)
        changes: dict = {}
        if pending:
            generation += 1
            changes = {"generation": generation, "pending": None,
                       "changed": {"generation": generation, "at": time.time(), **pending}}
        mark_complete(client, name, found, corpus_sha256=corpus.sha256, text_template=template, **changes)
    return {"collection": name, "documents": f"{database}.{documents}", "new": len(plan.new),
            "changed": len(plan.changed), "removed": len(plan.removed), "failed": len(failed),
            "failed_ids": failed[:20], "entities": found, "generation": generation, "replayed": replayed}


@job_app.command("sync")
def sync_command(
    workdir: Workdir,
    milvus_uri: MilvusUri,
    mongo_uri: MongoUri,
    scene: Scene,
    repository: ModelRepositoryUri,
    model: Model,
    collection: Collection,
    version: Version = None,
    database: Database = "mmsearch",
    text_field: TextField = None,
    text_template: TextTemplate = None,
    batch_size: BatchSize = 256,
    device: Device = "auto",
    threads: OnnxThreads = 0,
    writes_database: str = typer.Option("mmsearch", envvar="MMSEARCH_WRITER_LOG_DATABASE",
                                        help="MongoDB database of the write log (the writer's): live writes win."),
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
) -> None:
    """Update the published version in place: encode and upsert new and changed documents, delete removed ones."""
    with exit_on_error(), Progress("sync", interval=0.5) as progress:
        summary = sync(workdir, milvus_uri, mongo_uri, scene, repository, model, collection=collection,
                       version=version, database=database, text_field=text_field,
                       text_template=text_template, batch_size=batch_size,
                       device=device, threads=threads, writes_database=writes_database, token=milvus_token,
                       timeout=timeout, progress=progress)
        progress.finish(**summary)
