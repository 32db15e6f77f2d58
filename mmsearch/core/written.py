"""What a reader may know of the write log (:mod:`mmsearch.core.writelog`): which ids a scene's writes named.

Serving never writes the log, nor imports the module that does; it asks
only which ids a scene's entries named between two log positions, to evict
those ids' summaries from its cache (:mod:`mmsearch.services.serving.pipeline.freshness`).
The log's layout is the writer's; this module is the one place a reader
learns it from.
"""
from __future__ import annotations

from typing import Any, Iterable

ENTRIES = "writes"  # the collection of log entries: ``_id`` = position, ``scene``, ``op``, ``id``, ...


def written_query(scene: str, after: int, upto: int) -> tuple[dict, dict]:
    """(filter, projection) of the entries of ``scene`` at positions in (``after``, ``upto``]. Pure."""
    return {"scene": scene, "_id": {"$gt": int(after), "$lte": int(upto)}}, {"id": 1}


def written_ids(docs: Iterable[dict[str, Any]]) -> list[int]:
    """The distinct ids the entries ``docs`` name, first seen first. Pure."""
    return list(dict.fromkeys(int(d["id"]) for d in docs))
