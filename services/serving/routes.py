"""Following alias moves while serving: ``publish`` points a scene's alias at a new version.

:func:`follow` re-reads the manifest behind each collection name the active
config searches; when a name now resolves to another collection, the new
target must pass the consistency check for every encoder that queries it
(:func:`services.serving.activation.check_consistency`). It returns a new
:class:`Active` with the moved routes (the config's own Active is never
changed), or None when nothing moved. A target built by another model is
refused: logged, and the old collection keeps serving. The same round reads
each collection's documents generation (bumped by a stage that changes
documents in place): a new generation is a new Active too, so the summary
cache stops serving what it holds for the old one.

:class:`RouteWatcher` runs it every ``interval`` seconds and swaps the
result into the config store with a compare-and-swap, so a config reload in
between is never overwritten by routes computed for the old config.
"""
from __future__ import annotations

import asyncio
import logging

from services.serving.activation import Active, ConsistencyError, check_consistency, recorded_search_params
from services.serving.backends import Backends
from services.serving.experiments import ConfigStore

log = logging.getLogger(__name__)


async def follow(active: Active, backends: Backends) -> Active | None:
    """The Active with moved routes, or None (see module doc). Raises when Milvus does not answer."""
    routes, generations, search_params = dict(active.routes), dict(active.generations), dict(active.search_params)
    for name, current in active.routes.items():
        manifest = await backends.matcher.manifest(name)
        target = manifest.get("collection", name)
        if target != current:
            try:
                for model in sorted(active.users.get(name, ())):
                    check_consistency(model, await backends.manifests(model), name, manifest)
            except ConsistencyError as exc:
                log.error("not following %s -> %s: %s", name, target, exc)
                manifest, target = await backends.matcher.manifest(current), current  # still served
        if target == current:
            generation = int(manifest.get("generation", 0))
            if generation != active.generations.get(name, 0):  # documents changed in place (sync)
                log.info("documents of collection %s changed (generation %d)", target, generation)
                generations[name] = generation
            continue
        log.info("collection %s now resolves to %s", name, target)
        routes[name], generations[name] = target, int(manifest.get("generation", 0))
        search_params[name] = recorded_search_params(manifest)
    if routes == dict(active.routes) and generations == dict(active.generations):
        return None
    return active.with_routes(routes, generations, search_params)


class RouteWatcher:
    def __init__(self, store: ConfigStore[Active], backends: Backends, interval: float):
        self.store, self.backends, self.interval = store, backends, interval
        self.problem = ""  # the last failure to read the routes ("" while Milvus answers)

    async def check(self) -> bool:
        """One round; True when a moved route went live."""
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
