"""``mmsearch job push-mongo``: the corpus into MongoDB, one document per record.

Decisions:
- Each document is the corpus record plus ``_id`` = its id (``id`` kept too,
  under a unique index, so both lookups work). Each batch is an unordered
  ``insert_many``; the documents it reports as duplicate keys (present from an
  earlier or crashed run) are then replaced with ``ReplaceOne(upsert=True)``
  keyed by ``_id``. The result is that of upserting everything (a rerun after
  SIGKILL mid-batch ends with no duplicate, no lost and no stale document) at
  insert speed on a fresh collection: bulk upserts measured several times
  slower than inserts on secantusd (bench/indexing.py).
- The count check reads every ``_id`` of the collection once (one scan: a
  ``$in`` count over thousands of ids is quadratic on secantusd) and counts the
  corpus ids among them; it must equal the number of corpus records. Documents
  of other corpora in the same collection are left alone and reported as
  ``other``.
- The URI selects a MongoDB server; the embedded default is a local
  secantusd (``mmsearch.dev.mongo.start_mongo``), same pymongo code.
  Unreachable servers fail within ``--timeout`` seconds with one clear line.
"""
from __future__ import annotations

from typing import Iterable, Iterator

import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import BatchSize, Collection, Database, MongoUri, TIMEOUT, Timeout, Workdir
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.corpus import read_corpus
from mmsearch.jobs.progress import Progress
from mmsearch.core.redact import redact


def batched(items: Iterable[dict], size: int) -> Iterator[list[dict]]:
    batch: list[dict] = []
    for item in items:
        batch.append(item)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch


def connect(uri: str, timeout: float):
    """A pymongo client that has answered ping; JobError naming the URI otherwise."""
    import pymongo

    try:
        client = pymongo.MongoClient(uri, serverSelectionTimeoutMS=int(timeout * 1000),
                                     connectTimeoutMS=int(timeout * 1000))
        client.admin.command("ping")
        return client
    except pymongo.errors.ConfigurationError as exc:
        raise JobError(f"--mongo-uri {redact(uri)}: {redact(str(exc))}") from None
    except pymongo.errors.InvalidURI as exc:
        raise JobError(f"--mongo-uri {redact(uri)}: {redact(str(exc))}") from None
    except pymongo.errors.PyMongoError as exc:
        reason = str(exc).splitlines()[0].split(" (configured timeouts")[0].split(", Timeout:")[0]
        raise JobError(f"cannot reach MongoDB at {redact(uri)} within {timeout:g}s: {reason[:200]}") from None


def write_batch(target, docs: list[dict]) -> None:
    """Insert ``docs``; the ones whose ``_id`` exists already (a rerun) are replaced instead."""
    from pymongo import ReplaceOne
    from pymongo.errors import BulkWriteError

    try:
        target.insert_many(docs, ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        other = [e for e in errors if e.get("code") != 11000]
        if other:
            raise JobError(f"MongoDB refused document _id={docs[other[0]['index']]['_id']}: {other[0].get('errmsg')}") from None
        target.bulk_write([ReplaceOne({"_id": docs[e["index"]]["_id"]}, docs[e["index"]], upsert=True)
                           for e in errors], ordered=False)


def push_mongo(workdir: str, mongo_uri: str, collection: str, *, database: str = "mmsearch",
               batch_size: int = 1000, timeout: float = 10.0, progress: Progress | None = None) -> dict:
    """Upsert every corpus record; returns ``{documents, other, collection}``."""
    import pymongo

    if batch_size < 1:
        raise JobError(f"--batch-size {batch_size}: must be at least 1")
    if not collection or "$" in collection or collection.startswith("system."):
        raise JobError(f"--collection {collection!r}: not a valid MongoDB collection name")
    records = read_corpus(workdir).records
    if not records:
        raise JobError(f"empty corpus in {workdir}: nothing to push")
    client = connect(mongo_uri, timeout)
    try:
        target = client[database][collection]
        target.create_index("id", unique=True, name="id_unique")
        if progress is not None:
            progress.total = len(records)
        for batch in batched(records, batch_size):
            write_batch(target, [{"_id": r["id"], **r} for r in batch])
            if progress is not None:
                progress.update(len(batch))
        stored = {doc["_id"] for doc in target.find({}, {"_id": 1}).batch_size(10000)}
        present = sum(1 for r in records if r["id"] in stored)
        if present != len(records):
            raise JobError(f"count check failed: {present} of {len(records)} corpus documents in "
                           f"{database}.{collection}; re-run push-mongo")
        total = len(stored)
    except pymongo.errors.PyMongoError as exc:
        raise JobError(f"MongoDB at {redact(mongo_uri)} failed: {str(exc).splitlines()[0][:300]}") from None
    finally:
        client.close()
    return {"documents": present, "other": total - present, "collection": f"{database}.{collection}"}


@job_app.command("push-mongo")
def push_mongo_command(
    workdir: Workdir,
    mongo_uri: MongoUri,
    collection: Collection,
    database: Database = "mmsearch",
    batch_size: BatchSize = 1000,
    timeout: Timeout = TIMEOUT,
) -> None:
    """Upsert the corpus into MongoDB (documents keyed by id) and check the count."""
    with exit_on_error(), Progress("push-mongo") as progress:
        summary = push_mongo(workdir, mongo_uri, collection, database=database, batch_size=batch_size,
                             timeout=timeout, progress=progress)
        progress.finish(**summary)
