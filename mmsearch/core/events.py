"""The A/B event documents: impressions and feedback, as serving writes them and the report reads them.

One schema, defined here because two sides share it: serving
(:mod:`mmsearch.services.serving.backends.event_store`) writes the documents, ``mmsearch experiments
report`` (:mod:`mmsearch.reports.experiment_report`) reads them. Both live in one MongoDB
database (``MMSEARCH_EVENTS_DATABASE``, default :data:`DEFAULT_DATABASE`),
collections :data:`IMPRESSIONS` and :data:`FEEDBACK`, each with a TTL index on
``at`` (``MMSEARCH_EVENTS_TTL_DAYS``).

An impression (one search response)::

    {_id: impression id, scene, arm: "layer=arm,...", query: "text"|"image",
     assignments: [{layer, arm, default, via}], items: [{id, rank}], user, at}

``via`` says how the request got the layer's arm: ``bucket`` (hashed from a
user id: randomized, what an experiment compares), ``forced`` (force_arms) or
``default`` (no user id: the layer's default arm). ``user`` is a salted hash
of the user id (:func:`user_hash`), never the id; None without one. ``rank``
starts at 1.

A feedback event (one accepted Feedback call)::

    {_id: "<impression>/<item>/<event>", impression, scene, assignments: {layer: arm},
     item, rank, event: click|dwell|skip, dwell_seconds (dwell only), at}

The ``_id`` makes the same event on the same item of one impression a
duplicate key: it is stored once however often it is sent. Pure functions
only: no client library here.
"""
from __future__ import annotations

import datetime as dt
import hmac
from typing import Iterable, Sequence

DEFAULT_DATABASE = "mmsearch_events"
IMPRESSIONS = "impressions"
FEEDBACK = "feedback"
EVENTS = ("click", "dwell", "skip")
TIME_FIELD = "at"


def user_hash(salt: bytes, user_id: str) -> str | None:
    """A keyed hash of the user id (HMAC-SHA256, 128 bits in hex); None for an anonymous request.

    Stable for one salt, so the same user's impressions can be grouped, and not
    invertible without the salt (a plain hash of a guessable id would be).
    """
    if not user_id:
        return None
    return hmac.digest(salt, user_id.encode("utf-8"), "sha256").hex()[:32]


def impression_document(*, impression_id: str, scene: str, arm: str, query: str,
                        assignments: Iterable[tuple[str, str, str, str]], item_ids: Sequence[int],
                        user: str | None, at: dt.datetime) -> dict:
    """An impression document; ``assignments`` holds (layer, arm, default arm, via) per layer."""
    return {
        "_id": impression_id,
        "scene": scene,
        "arm": arm,
        "query": query,
        "assignments": [{"layer": layer, "arm": name, "default": default, "via": via}
                        for layer, name, default, via in assignments],
        "items": [{"id": int(i), "rank": rank} for rank, i in enumerate(item_ids, 1)],
        "user": user,
        TIME_FIELD: at,
    }


def feedback_id(impression_id: str, item_id: int, event: str) -> str:
    """The ``_id`` that makes a repeated event a duplicate."""
    return f"{impression_id}/{int(item_id)}/{event}"


def feedback_document(*, impression_id: str, scene: str, assignments: Iterable[tuple[str, str]], item_id: int,
                      rank: int, event: str, dwell_seconds: float | None, at: dt.datetime) -> dict:
    """A feedback document (see the module doc); ``dwell_seconds`` only for ``dwell``."""
    if event not in EVENTS:
        raise ValueError(f"event {event!r} is not one of {EVENTS}")
    doc = {
        "_id": feedback_id(impression_id, item_id, event),
        "impression": impression_id,
        "scene": scene,
        "assignments": {layer: arm for layer, arm in assignments},
        "item": int(item_id),
        "rank": rank,
        "event": event,
        TIME_FIELD: at,
    }
    if event == "dwell":
        doc["dwell_seconds"] = float(dwell_seconds or 0.0)
    return doc
