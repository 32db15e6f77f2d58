"""Writing the registry (:mod:`mmsearch.core.milvus.registry`): a collection's state, and the alias switch.

- The state row is read, changed and written back (:func:`update_state`): the
  stages that write it for one collection run one after another (the operator
  runs one stage at a time), never concurrently.
- A one-row upsert is the atomic alias switch (:func:`set_alias`). Where the
  engine has native aliases (a Milvus server, milvus-lite 3.x) the native
  alias is moved first; Milvus Lite 2.5 answers UNIMPLEMENTED to every alias
  call, and there the registry row is the alias.
"""
from __future__ import annotations

import json
import time

from mmsearch.core.milvus.connection import MilvusStoreError, short_error, unimplemented
from mmsearch.core.milvus.names import REGISTRY
from mmsearch.core.milvus.registry import alias_row, read_state, resolve_alias, with_registry

HISTORY = 10  # previous targets an alias row remembers (for --rollback)


def _create_registry(client) -> None:
    from pymilvus import DataType

    schema = client.create_schema(auto_id=False, enable_dynamic_field=False,
                                  description="mmsearch: aliases and completed collections")
    schema.add_field("key", DataType.VARCHAR, is_primary=True, max_length=512)
    schema.add_field("value", DataType.VARCHAR, max_length=65535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=2)
    index = client.prepare_index_params()
    index.add_index("vector", index_type="FLAT", metric_type="L2")
    client.create_collection(REGISTRY, schema=schema, index_params=index)


def registry_put(client, key: str, value: dict) -> None:
    """Set ``key`` to ``value`` (the registry is made where there is none)."""
    row = {"key": key, "value": json.dumps(value), "vector": [0.0, 0.0]}
    with_registry(client, lambda: client.upsert(REGISTRY, [row]), create=_create_registry)


def registry_delete(client, key: str) -> None:
    """Remove ``key`` (nothing to do where there is no registry)."""
    with_registry(client, lambda: client.delete(REGISTRY, filter=f"key == {json.dumps(key)}"))


def update_state(client, name: str, **changes) -> dict:
    """Merge ``changes`` into collection ``name``'s registry row (None removes a key); returns the row."""
    state = read_state(client, name)
    for key, value in changes.items():
        if value is None:
            state.pop(key, None)
        else:
            state[key] = value
    registry_put(client, f"collection:{name}", state)
    return state


def set_alias(client, alias: str, collection: str, *, history: list[str] | None = None) -> str | None:
    """Point ``alias`` at ``collection`` in one step; returns the collection it pointed at before.

    Where the engine has native aliases the native alias is moved first, then the registry row
    (``native: true``); on Milvus Lite 2.5 the registry row is the alias. The row's ``history`` gets
    the previous target in front, unless ``history`` is given (a rollback passes what remains)."""
    row = alias_row(client, alias)
    previous = resolve_alias(client, alias, row)
    native = True
    try:
        try:
            client.describe_alias(alias)
            client.alter_alias(collection, alias)
        except Exception as exc:
            if unimplemented(exc):
                raise
            client.create_alias(collection, alias)
    except Exception as exc:
        if not unimplemented(exc):
            raise MilvusStoreError(f"cannot set alias {alias} -> {collection}: {short_error(exc)}") from None
        native = False  # Milvus Lite 2.5: the registry row is the alias
    if history is None:
        history = [c for c in [previous, *row.get("history", [])] if c and c != collection]
    registry_put(client, f"alias:{alias}", {"collection": collection, "at": time.time(), "native": native,
                                            "history": history[:HISTORY]})
    return previous

