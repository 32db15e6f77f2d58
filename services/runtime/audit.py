"""The audit trail: every write, admin call and refused call, as a JSON log line and a counter.

A line (logger ``mmsearch.audit``) carries the time, the key id (never the
secret; ``anonymous`` for no key, ``invalid`` for a key that is not valid),
the action (``search``, ``feedback``, ``scenes``, ``write`` ...), the scene,
counts, the client address and the outcome (``ok``, ``unauthenticated``,
``forbidden``, ``rate_limited``, or the error). The counter
``mmsearch_audit_events_total{key_id, action, outcome}`` has one series per key
of the key file (plus ``anonymous`` and ``invalid``): the id a caller claims
is never a label, so callers cannot grow the series.
"""
from __future__ import annotations

import logging

from prometheus_client import Counter

AUDIT_EVENTS = Counter(
    "mmsearch_audit_events_total",
    "Audited calls (writes, admin calls, refusals) by key id, action and outcome.",
    ["key_id", "action", "outcome"],
)
log = logging.getLogger("mmsearch.audit")


def audit(action: str, outcome: str, key_id: str, *, scene: str | None = None, count: int | None = None,
          client: str | None = None, reason: str | None = None, request_id: str | None = None) -> None:
    """Write one audit line and count it (see the module doc)."""
    fields = {"audit": True, "action": action, "outcome": outcome, "key_id": key_id}
    for name, value in (("scene", scene), ("count", count), ("client", client), ("reason", reason),
                        ("request_id", request_id)):
        if value is not None:
            fields[name] = value
    log.info(f"{action} {outcome}", extra=fields)
    AUDIT_EVENTS.labels(key_id, action, outcome).inc()
