"""Summary documents from the MongoDB-wire store: one ``$in`` lookup per page.

Uses pymongo's ``AsyncMongoClient`` (it works unchanged against secantusd and
MongoDB). Documents are keyed by ``_id`` = the vector id (push-mongo's
contract). The page order is preserved; ids without a document are dropped
and counted. Each lookup runs under ``pymongo.timeout`` (its share of the
deadline), which bounds server selection too, so a store that is down fails
fast with ``Unavailable`` (serving's backend errors; ``TimeoutError`` when
the lookup overruns its share, ``Mismatch`` when the store refuses it);
pymongo's monitor reconnects when it comes back.
"""
from __future__ import annotations

import math
from typing import Any, Hashable, Sequence

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, ExecutionTimeout, PyMongoError

from services.serving.errors import Mismatch, Unavailable


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
        self._client: AsyncMongoClient = AsyncMongoClient(
            uri,
            serverSelectionTimeoutMS=int(server_selection_timeout_s * 1000),
            connectTimeoutMS=int(server_selection_timeout_s * 1000),
            tz_aware=True,
        )

    async def lookup(self, database: str, collection: str, ids: Sequence[int], fields: Sequence[str] | None,
                     timeout: float, *, version: Hashable = None) -> tuple[list[dict[str, Any] | None], int]:
        """(documents in ``ids`` order with None for missing, missing count); ``version`` is for caches."""
        if not len(ids):
            return [], 0
        projection = {name: 1 for name in fields} if fields is not None else None
        try:
            with pymongo.timeout(timeout):  # bounds server selection, the round trip and the query
                cursor = self._client[database][collection].find({"_id": {"$in": [int(i) for i in ids]}}, projection)
                docs = await cursor.to_list(None)
        except ExecutionTimeout as exc:
            raise TimeoutError(f"the lookup exceeded {timeout * 1000:.0f} ms: {exc}") from None
        except ConnectionFailure as exc:
            raise Unavailable(f"the store at {self._redacted()} is unreachable: {exc}") from None
        except PyMongoError as exc:
            raise Mismatch(f"lookup in {database}.{collection} failed: {exc}") from None
        return order_documents(ids, docs)

    async def ping(self) -> None:
        try:
            await self._client.admin.command("ping")
        except PyMongoError as exc:
            raise Unavailable(f"the store at {self._redacted()} is unreachable: {exc}") from None

    def _redacted(self) -> str:
        head, sep, tail = self.uri.partition("@")
        return f"{head.split('//')[0]}//***@{tail}" if sep else self.uri

    async def close(self) -> None:
        await self._client.close()
