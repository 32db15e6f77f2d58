"""A collection's rows: upserting, deleting, reading their hashes, counting, marking the collection complete, dropping it."""
from __future__ import annotations

import time
from typing import Iterable, Iterator

import numpy as np

from mmsearch.core.milvus.names import HASH_FIELD
from mmsearch.core.milvus.registry_writes import registry_delete, update_state


def rebatch(batches: Iterable[tuple[np.ndarray, np.ndarray]], size: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """Re-cut (ids, vectors) chunks into batches of exactly ``size`` rows, the last one partial."""
    pending_ids: list[np.ndarray] = []
    pending_vecs: list[np.ndarray] = []
    held = 0
    for ids, vectors in batches:
        pending_ids.append(np.asarray(ids, dtype=np.int64))
        pending_vecs.append(np.asarray(vectors, dtype=np.float32))
        held += len(ids)
        while held >= size:
            all_ids, all_vecs = np.concatenate(pending_ids), np.concatenate(pending_vecs)
            yield all_ids[:size], all_vecs[:size]
            pending_ids, pending_vecs = [all_ids[size:]], [all_vecs[size:]]
            held -= size
    if held:
        yield np.concatenate(pending_ids), np.concatenate(pending_vecs)


def upsert_rows(client, name: str, rows: list[dict]) -> None:
    """Upsert ``rows`` (each built by ``mmsearch.jobs.push_milvus.milvus_row``) into ``name``."""
    if rows:
        client.upsert(name, rows)


def delete_ids(client, name: str, ids: Iterable[int]) -> None:
    ids = [int(i) for i in ids]
    if ids:
        client.delete(name, ids=ids)


def read_hashes(client, name: str, batch_size: int = 5000) -> dict[int, str]:
    """``{id: content hash}`` of every row of ``name`` (one pass with a query iterator)."""
    iterator = client.query_iterator(name, batch_size=batch_size, filter="", output_fields=[HASH_FIELD],
                                     consistency_level="Strong")
    found: dict[int, str] = {}
    try:
        while True:
            rows = iterator.next()
            if not rows:
                break
            found.update((int(row["id"]), str(row.get(HASH_FIELD) or "")) for row in rows)
    finally:
        iterator.close()
    return found


def count(client, name: str) -> int:
    rows = client.query(name, filter="", output_fields=["count(*)"], consistency_level="Strong")
    return int(rows[0]["count(*)"])


def mark_complete(client, name: str, n: int, **state) -> None:
    """Record that ``name`` holds all ``n`` rows (``publish`` requires it), with more ``state``."""
    update_state(client, name, complete=True, count=n, at=time.time(), **state)


def drop_collection(client, name: str) -> None:
    """Drop ``name`` and its registry row."""
    client.drop_collection(name)
    registry_delete(client, f"collection:{name}")
