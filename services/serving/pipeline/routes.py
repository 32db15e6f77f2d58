"""Following alias moves while serving: ``publish`` points a scene's alias at a new version.

:func:`follow` re-reads the manifest behind each collection name the active
config searches; when a name now resolves to another collection, the new
target must pass the consistency check for every encoder that queries it
(:func:`mmsearch.services.serving.pipeline.activation.check_consistency`) and hold the fields
the config needs (:func:`mmsearch.services.serving.pipeline.activation.check_layout`), and then
be warmed: the matcher loads it and answers a canary query on it (a search
with a unit vector of the collection's dimension and metric, through the same
client and batcher path requests take). Only then does the route move, so the
first requests on a new version never pay its load or fail on it. A target
built by another model, or without a field or the BM25 text the config needs,
is refused (logged) and the old collection keeps serving; a target whose
canary fails is retried on the next round, the old collection serving
meanwhile.

It returns a new :class:`Active` with the moved routes and the fresh records
(documents, sync generation, evaluation, index: :func:`mmsearch.services.serving.pipeline.activation.record`;
a sync or a gated publish changes them without moving the route), or None
when nothing changed. The config's own Active is never changed. When the
target is refused, the record of the collection still served is re-read, so
a sync of it is seen even while the alias points elsewhere: a new sync
generation is a new Active, and the summary cache (keyed by collection and
generation) stops serving what it holds for the old one.

:class:`RouteWatcher` runs it every ``interval`` seconds and swaps the
result into the config store with a compare-and-swap, so a config reload in
between is never overwritten by routes computed for the old config.
"""
from __future__ import annotations

import asyncio
import logging

from mmsearch.services.serving.pipeline.activation import Active, ConsistencyError, Needs, check_consistency, check_layout, record
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.config.store import ConfigStore

log = logging.getLogger(__name__)


async def follow(active: Active, backends: Backends) -> Active | None:
    """The Active with moved routes and fresh records, or None (see module doc). Raises when Milvus
    does not answer."""
    routes = dict(active.routes)
    records = dict(active.records)
    for name, current in active.routes.items():
        manifest = await backends.matcher.manifest(name)
        target = manifest.get("collection", name)
        if target != current and not await followable(active, backends, name, target, manifest):
            manifest, target = await backends.matcher.manifest(current), current  # still served
        if target == current:
            records[name] = record(manifest)
            continue
        log.info("collection %s now resolves to %s (loaded, canary answered)", name, target)
        routes[name] = target
        records[name] = record(manifest)
    if routes == dict(active.routes) and records == dict(active.records):
        return None
    return active.with_routes(routes, records)


async def followable(active: Active, backends: Backends, name: str, target: str, manifest: dict) -> bool:
    """Whether collection name ``name`` may move to ``target``: its encoders and layout check out and
    it answers a canary query (logged when not)."""
    try:
        for model in sorted(active.users.get(name, ())):
            check_consistency(model, await backends.manifests(model), name, manifest)
        check_layout(target, manifest, active.needs.get(name, Needs()))
    except ConsistencyError as exc:
        log.error("not following %s -> %s: %s", name, target, exc)
        return False
    try:
        await backends.matcher.warm(target, manifest)
    except Exception as exc:  # not loaded yet, or it does not answer: the old one keeps serving
        log.warning("not following %s -> %s yet: the canary query failed: %s", name, target, exc)
        return False
    return True


class RouteWatcher:
    def __init__(self, store: ConfigStore[Active], backends: Backends, interval: float):
        self.store, self.backends, self.interval = store, backends, interval
        self.problem = ""  # the last failure to read the routes ("" while Milvus answers)
        self.rounds = 0  # rounds done (tests wait for more rounds instead of sleeping)

    async def check(self) -> bool:
        """One round; True when a change (a moved route, a fresh record) went live."""
        active = self.store.current
        if active is None:
            return False
        try:
            moved = await follow(active, self.backends)
            self.problem = ""
        except Exception as exc:
            self.problem = str(exc) or type(exc).__name__
            return False
        return moved is not None and self.store.replace(active, moved)

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
            self.rounds += 1
