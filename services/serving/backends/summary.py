"""Summary documents from the MongoDB-wire store: one ``$in`` lookup per page.

Uses pymongo's ``AsyncMongoClient`` (it works unchanged against secantusd and
MongoDB). Documents are keyed by ``_id`` = the vector id (push-mongo's
contract). The page order is preserved; ids without a document are dropped
and counted. Errors are serving's backend errors: ``Unavailable`` when the
store cannot be reached, ``TimeoutError`` when the lookup overruns its share,
``Mismatch`` when the store refuses it.

Every call goes through :class:`~mmsearch.services.serving.backends.shielded_mongo.ShieldedMongo` (never
cancelled by its caller, a jammed client rebuilt, ``close()`` bounded).
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from mmsearch.core.redact import redact
from mmsearch.core.written import ENTRIES, written_ids, written_query
from mmsearch.services.runtime import tracing
from mmsearch.services.serving.errors import Mismatch, Unavailable
from mmsearch.services.serving.backends.shielded_mongo import ShieldedMongo, short as _short


def order_documents(ids: Sequence[int], docs: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any] | None], int]:
    """Documents in ``ids`` order (None where missing) and the number missing. Pure."""
    by_id = {doc.get("_id"): doc for doc in docs}
    ordered = [by_id.get(int(i)) for i in ids]
    return ordered, sum(doc is None for doc in ordered)


def plain(value: Any) -> Any:
    """A JSON-compatible value for a protobuf Struct (ObjectId, dates, bytes -> str; NaN -> None)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return None if math.isnan(value) or math.isinf(value) else value
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


class SummaryStore:
    def __init__(self, uri: str, *, server_selection_timeout_s: float = 1.0):
        self.uri = uri
        self._timeout = server_selection_timeout_s
        self._mongo = ShieldedMongo(uri, "summary store", timeout_s=server_selection_timeout_s)
        self._shown = self._mongo.shown

    async def lookup(self, database: str, collection: str, ids: Sequence[int], fields: Sequence[str] | None,
                     timeout: float, *, version: Hashable = None) -> tuple[list[dict[str, Any] | None], int]:
        """(documents in ``ids`` order with None for missing, missing count); ``version`` is for caches."""
        if not len(ids):
            return [], 0
        projection = {name: 1 for name in fields} if fields is not None else None
        query = {"_id": {"$in": [int(i) for i in ids]}}
        try:
            with tracing.span("mongodb find", {"db.system": "mongodb", "db.operation.name": "find",
                                               "db.namespace": database, "db.collection.name": collection,
                                               "mmsearch.ids": len(ids)}, kind="CLIENT"):
                docs = await self._mongo.call(
                    lambda client: client[database][collection].find(query, projection).to_list(None), timeout)
        except ExecutionTimeout as exc:
            raise TimeoutError(f"the lookup exceeded {timeout * 1000:.0f} ms: {redact(str(exc))}") from None
        except ConnectionFailure as exc:
            raise Unavailable(f"the store at {self._shown} is unreachable: {_short(exc)}") from None
        except PyMongoError as exc:
            raise Mismatch(f"lookup in {database}.{collection} failed: {_short(exc)}") from None
        return order_documents(ids, docs)

    async def written(self, database: str, scene: str, after: int, upto: int, limit: int,
                      timeout: float) -> list[int] | None:
        """The ids ``scene``'s live writes named at write log positions (``after``, ``upto``] (the log in
        ``database``, :mod:`mmsearch.core.written`); None when they are more than ``limit`` entries."""
        query, projection = written_query(scene, after, upto)
        try:
            docs = await self._mongo.call(
                lambda client: client[database][ENTRIES].find(query, projection).limit(limit + 1).to_list(None),
                timeout)
        except ConnectionFailure as exc:
            raise Unavailable(f"the store at {self._shown} is unreachable: {_short(exc)}") from None
        except PyMongoError as exc:
            raise Mismatch(f"reading the write log in {database}.{ENTRIES} failed: {_short(exc)}") from None
        return None if len(docs) > limit else written_ids(docs)

    async def ping(self, timeout: float | None = None) -> None:
        """Raise :class:`Unavailable` unless the store answers; rebuild the client if a call is stuck."""
        self._mongo.check_stuck()
        timeout = self._timeout if timeout is None else timeout
        try:
            await self._mongo.call(lambda client: client.admin.command("ping"), timeout, probe=True)
        except PyMongoError as exc:
            raise Unavailable(f"the store at {self._shown} is unreachable: {_short(exc)}") from None

    async def close(self) -> None:
        """Close the client (bounded; see :meth:`ShieldedMongo.close`)."""
        await self._mongo.close()
