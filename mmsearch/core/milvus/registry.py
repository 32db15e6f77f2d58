"""The registry collection as read: a collection's state, and the collection an alias points at.

Milvus Lite 2.5 has no aliases and Milvus Lite 3.x keeps no collection
descriptions, so mmsearch keeps ``mmsearch_registry`` (VARCHAR key, VARCHAR
JSON value, a 2-d dummy vector because Milvus requires one):

- ``collection:<name>`` -> the collection's state (:func:`read_state`);
- ``writes:<name>`` -> ``{"position"}``: the live writes applied to it (:func:`writes_position`);
- ``alias:<scene>`` -> ``{"collection", "at", "native", "history"}``:
  ``history`` lists the collections the alias pointed at before, newest first
  (``publish --rollback`` moves back to the first that still exists and is
  complete, :func:`rollback_choice`); ``native`` says a native alias was set
  too (a Milvus server, milvus-lite 3.x), which is then the truth:
  :func:`resolve_alias` follows it, so a move made by another tool is
  followed too.

Every registry request goes through :func:`with_registry`: a client checks
once that the registry exists and is loaded, then each read or write is one
request (a registry dropped or released by another process meanwhile is
checked again and the request retried once).

Writing is :mod:`mmsearch.core.milvus.registry_writes`.
"""
from __future__ import annotations

import json

from mmsearch.core.milvus.connection import MilvusStoreError, ensure_loaded, unimplemented
from mmsearch.core.milvus.names import REGISTRY


_READY = "_mmsearch_registry_ready"  # set on a client once it has seen the registry exist and loaded


def registry_gone(exc: BaseException) -> bool:
    """Whether ``exc`` says a collection is missing or not loaded (Milvus codes 100 and 101; Milvus Lite
    2.5 answers a query on a dropped collection ``collection not found``, code 100). Pure."""
    if getattr(exc, "code", None) in (100, 101):
        return True
    text = str(getattr(exc, "message", None) or exc).lower()
    return any(said in text for said in ("collection not found", "not loaded", "can't find collection"))


def with_registry(client, call, create=None):
    """``call()`` (one request on the registry collection) once the registry is known to exist and be loaded.

    A client checks that once (``has_collection`` and the load state) and remembers it: a registry read
    or write is one request after that. Another process may drop or release the registry meanwhile, so a
    call that fails because the registry is missing or not loaded forgets that, checks again and is
    retried once. Where the registry does not exist, ``create(client)`` makes it (a write); without
    ``create`` the answer is None (nothing to read or delete)."""
    for retry in (False, True):
        if not getattr(client, _READY, False):
            if not client.has_collection(REGISTRY):
                if create is None:
                    return None
                create(client)
            ensure_loaded(client, REGISTRY)
            setattr(client, _READY, True)
        try:
            return call()
        except Exception as exc:
            if retry or not registry_gone(exc):
                raise
            setattr(client, _READY, False)


def registry_get(client, key: str) -> dict | None:
    """The registry's value for ``key``; None where there is none (or no registry yet)."""
    rows = with_registry(client, lambda: client.query(REGISTRY, filter=f"key == {json.dumps(key)}",
                                                      output_fields=["value"], consistency_level="Strong"))
    return json.loads(rows[0]["value"]) if rows else None


def read_state(client, name: str) -> dict:
    """Collection ``name``'s registry row: its record, ``complete`` and ``count``, the corpus fingerprint
    ``corpus_sha256``, the sync ``generation`` and its ``changed`` ids, the ``evaluation`` figures and the
    ``published`` gate decision; ``{}`` when it has none."""
    return registry_get(client, f"collection:{name}") or {}


def writes_position(client, name: str) -> int:
    """Up to which write log position collection ``name`` has applied the live writes (0: none recorded;
    :mod:`mmsearch.core.writelog`)."""
    return int((registry_get(client, f"writes:{name}") or {}).get("position") or 0)


def alias_row(client, alias: str) -> dict:
    """``alias``'s registry row (``{}``: none)."""
    return registry_get(client, f"alias:{alias}") or {}


def native_target(client, alias: str) -> str | None:
    """The collection a native alias points at; None where there is none (or no native aliases: an
    engine that answered UNIMPLEMENTED once is not asked again through this client)."""
    if getattr(client, "_mmsearch_no_aliases", False):
        return None
    try:
        return client.describe_alias(alias)["collection_name"]
    except Exception as exc:
        if unimplemented(exc):
            client._mmsearch_no_aliases = True  # Milvus Lite 2.5: pymilvus would log every failed call
        return None


def resolve_alias(client, alias: str, row: dict | None = None) -> str | None:
    """The collection ``alias`` points at (native alias where the row says it is set), or None."""
    row = alias_row(client, alias) if row is None else row
    if row.get("native"):
        return native_target(client, alias) or row.get("collection")
    return row.get("collection")


def alias_history(client, alias: str) -> list[str]:
    """The collections ``alias`` pointed at before, newest first."""
    return list(alias_row(client, alias).get("history", []))


def rollback_choice(history: list[str], usable) -> tuple[str | None, list[str]]:
    """The first collection of ``history`` that ``usable(name)`` accepts, and the history after it. Pure."""
    for position, name in enumerate(history):
        if usable(name):
            return name, list(history[position + 1:])
    return None, []


def resolve_collection(client, name: str) -> str:
    """The concrete collection behind ``name`` (an mmsearch alias, a native alias, or a collection)."""
    target = resolve_alias(client, name) or native_target(client, name)
    if target:
        return target
    if client.has_collection(name):
        return name
    raise MilvusStoreError(f"no collection or alias named {name!r}: publish one with "
                           f"`mmsearch job publish --scene {name} --version V`")
