"""Health: which dependencies answer, probed on a loop; SERVING only while a config is active and all do.

:func:`probe` asks each dependency once (preprocess lists its models, Milvus
and MongoDB ping, every active encoder reports ready) and returns the
problems by dependency name; it changes nothing. The preprocess service is a
dependency only of a config with an arm that sends it queries (image
queries, or ``preprocess: service``): when the active config tokenizes every
query inline, it is not probed, so serving is SERVING without it (and its
health says nothing about it); before any config is active it is probed
(the config to come may need it; health is NOT_SERVING then anyway). :class:`Health` keeps the
last result: the stage runner reads ``down`` to tell a timeout against a
dependency that is down (UNAVAILABLE, with the probe's finding) from a slow
one (DEADLINE_EXCEEDED).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

from mmsearch.services.serving.pipeline.activation import Active
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.backends.encoders import encoder_dependency

log = logging.getLogger(__name__)


async def probe(backends: Backends, active: Active | None, timeout: float) -> dict[str, str]:
    """Dependency name -> problem, for every dependency that does not answer (empty: all healthy)."""
    problems: dict[str, str] = {}

    async def check(name: str, coro) -> None:
        try:
            if await asyncio.wait_for(coro, timeout * 2) is False:
                problems[name] = "not ready"
        except Exception as exc:
            problems[name] = str(exc) or type(exc).__name__

    checks = [check("milvus", backends.matcher.ping(timeout)), check("mongo", backends.summary.ping())]
    if active is None or active.preprocess_service:
        checks.append(check("preprocess", backends.preprocess.models(timeout)))
    if active is not None:
        checks += [check(encoder_dependency(model, backend), encoder.ready())
                   for (backend, model), encoder in active.encoders.items()]
    # The event store is no dependency (searches go on without it), but its probe lets feedback fail at once
    # while it is down (ShieldedMongo.down).
    await asyncio.gather(*checks, backends.events.ping(timeout))
    return problems


@dataclass
class Health:
    down: dict[str, str] = field(default_factory=dict)  # from the last probe
    serving: bool | None = None
    rounds: int = 0  # probe rounds done (tests wait for more rounds instead of sleeping)
