"""Following alias moves while serving: ``publish`` points a scene's alias at a new version.

:func:`follow` re-reads the manifest behind each collection name the active
config searches; when a name now resolves to another collection, the new
target must be served by every tower that queries it: the arm's own encoder
(:func:`mmsearch.services.serving.pipeline.activation.check_consistency`), or, for a version
built by another model, that model's tower from the model repository, loaded
and warmed with a canary query before the move
(:mod:`mmsearch.services.serving.pipeline.migration`); and it must hold the fields
the config needs (:func:`mmsearch.services.serving.pipeline.activation.check_layout`), and then
be warmed: the matcher loads it and answers a canary query on it (a search
with a unit vector of the collection's dimension and metric, through the same
client and batcher path requests take). Only then does the route move, so the
first requests on a new version never pay its load or fail on it. A target
built by a model the repository does not hold (or holds another copy of), or
without a field or the BM25 text the config needs,
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
generation) stops serving what it holds for the old one. A moved live write
position is a new Active too, and the summaries of the ids written are
evicted (:mod:`mmsearch.services.serving.pipeline.freshness`).

:class:`RouteWatcher` runs it every ``interval`` seconds and swaps the
result into the config store with a compare-and-swap, so a config reload in
between is never overwritten by routes computed for the old config. Each
round it also releases the encoders no current Active uses once the searches
that may hold them have ended (:class:`~mmsearch.services.serving.pipeline.migration.Releases`),
but the towers the latest move left, kept loaded and warm for a rollback
(:func:`~mmsearch.services.serving.pipeline.migration.spare_after`), and loads
the tokenizers that versions registered by another model will need
(:class:`~mmsearch.services.serving.pipeline.migration.Shadows`).
"""
from __future__ import annotations

import asyncio
import logging

from dataclasses import replace
from types import MappingProxyType
from typing import Any, Mapping

from mmsearch.services.serving.pipeline import migration
from mmsearch.services.serving.pipeline.activation import Active, ConsistencyError, Needs, check_layout, record
from mmsearch.services.serving.pipeline.freshness import Freshness
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.config.store import ConfigStore

log = logging.getLogger(__name__)


async def follow(active: Active, backends: Backends) -> Active | None:
    """The Active with moved routes and fresh records, or None (see module doc). Raises when Milvus
    does not answer."""
    routes = dict(active.routes)
    records = dict(active.records)
    served_by = dict(active.served_by)
    loaded = dict(active.encoders)
    for name, current in active.routes.items():
        manifest = await backends.matcher.manifest(name)
        target = manifest.get("collection", name)
        towers = await followable(active, backends, name, target, manifest) if target != current else None
        if target != current and towers is None:
            manifest, target = await backends.matcher.manifest(current), current  # still served
        if target == current:
            records[name] = record(manifest)
            continue
        log.info("collection %s now resolves to %s (loaded, canary answered)", name, target)
        routes[name] = target
        records[name] = record(manifest)
        chosen, encoders = towers
        loaded.update(encoders)
        for configured, tower in chosen.items():
            if tower.encoder == configured:
                served_by.pop((name, configured), None)
            else:
                served_by[(name, configured)] = tower
    if routes == dict(active.routes) and records == dict(active.records):
        return None
    return replace(active.with_routes(routes, records), served_by=MappingProxyType(served_by),
                   encoders=MappingProxyType(in_use(active, loaded, served_by)))


def in_use(active: Active, loaded: Mapping[tuple[str, str], Any],
           served_by: Mapping[tuple[str, str], Any]) -> dict[tuple[str, str], Any]:
    """Of the ``loaded`` encoders, those some arm's tower is served by (its own or a migration's). Pure."""
    keys = {(spec.encoder_backend, served_by.get((spec.match.collection, tower.encoder), tower).encoder)
            for _, _, spec in active.experiments.arm_specs() for tower in (spec.query.text, spec.query.image)
            if tower is not None}
    return {key: encoder for key, encoder in loaded.items() if key in keys}


async def followable(active: Active, backends: Backends, name: str, target: str, manifest: dict) -> tuple | None:
    """The towers serving collection name ``name`` once it moves to ``target`` (see
    :func:`mmsearch.services.serving.pipeline.migration.towers_for`), when its encoders (the arms' own, or
    the export's that built it, loaded and warmed) and layout check out and it answers a canary query; None
    when not (logged)."""
    try:
        towers = await migration.towers_for(active, backends, name, target, manifest)
        check_layout(target, manifest, active.needs.get(name, Needs()))
    except ConsistencyError as exc:
        log.error("not following %s -> %s: %s", name, target, exc)
        return None
    try:
        await backends.matcher.warm(target, manifest)
    except Exception as exc:  # not loaded yet, or it does not answer: the old one keeps serving
        log.warning("not following %s -> %s yet: the canary query failed: %s", name, target, exc)
        return None
    return towers


class RouteWatcher:
    def __init__(self, store: ConfigStore[Active], backends: Backends, interval: float,
                 freshness: Freshness | None = None):
        self.store, self.backends, self.interval = store, backends, interval
        self.freshness = freshness  # evicts the summaries of live writes each round (None: nothing evicted)
        self.problem = ""  # the last failure to read the routes ("" while Milvus answers)
        self.rounds = 0  # rounds done (tests wait for more rounds instead of sleeping)
        self.releases = migration.Releases()
        self.shadows = migration.Shadows()

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
        if self.freshness is not None:  # what the stores hold now, whether or not the swap below wins
            await self.freshness.round((moved or active).records, self.backends.summary)
        if moved is None or not self.store.replace(active, moved):
            return False
        self.releases.moved(active, moved)
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.interval)
            await self.check()
            try:
                await self.releases.round(self.store.current, self.backends, self.store.activating)
            except Exception:  # never let the watcher die
                log.exception("releasing unused encoders failed")
            try:
                await self.shadows.round(self.store.current, self.backends)
            except Exception as exc:  # Milvus down: the routes' own check says so; read again next round
                log.debug("reading the registered versions failed: %s", exc)
            self.rounds += 1
