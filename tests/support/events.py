"""The A/B event store seen from a test: documents the serving's background drain writes."""
from __future__ import annotations

from tests.support.loops import eventually


def stored(collection, query: dict, *, n: int = 1, timeout: float = 30.0) -> list[dict]:
    """The documents of ``collection`` (pymongo) matching ``query``, once at least ``n`` are there: the
    drain writes them in the background, so this waits for them."""
    def found() -> list[dict] | None:
        docs = list(collection.find(query))
        return docs if len(docs) >= n else None
    return eventually(found, f"{n} documents matching {query} stored", timeout=timeout, interval=0.1)
