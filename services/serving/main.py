"""``mmsearch serve serving``: start the RetrievalService.

The port is bound first with health NOT_SERVING. Four background loops then
run for the life of the process: the config watcher (loads the experiment
file, reloads it on change, retries a refused activation), the route watcher
(follows alias moves, see :mod:`mmsearch.services.serving.pipeline.routes`), the health
loop (probes preprocess, encoders, Milvus and MongoDB; SERVING only while a
config is active and every dependency answers, so it recovers by itself) and
the impression drain (buffered impressions into the event store, see
:mod:`mmsearch.services.serving.backends.event_store`; the event store is not a health dependency:
searches go on while it is down).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from mmsearch.core.logs import setup_logging
from mmsearch.services.runtime import tracing
from mmsearch.core.settings import load_settings
from mmsearch.core.access.keyring import KeyRing
from mmsearch.services.runtime.access import AccessInterceptor
from mmsearch.services.runtime.server import RunningServer, run_until_signal, start_server
from mmsearch.services.serving import metrics
from mmsearch.services.serving.pipeline.activation import Active, activate
from mmsearch.services.serving.backends.bundle import Backends, connect
from mmsearch.services.serving.config.store import ConfigStore
from mmsearch.services.serving.outcomes.feedback import FeedbackHandler, Impressions
from mmsearch.services.serving.health import Health, probe
from mmsearch.services.serving.pipeline.freshness import Freshness
from mmsearch.services.serving.pipeline.routes import RouteWatcher
from mmsearch.services.serving.pipeline.search import Searcher
from mmsearch.services.serving.service import ACCESS_RULES, RetrievalServicer, register
from mmsearch.services.serving.config.settings import ServingSettings
from mmsearch.services.serving.outcomes.tokens import Signer

log = logging.getLogger(__name__)


async def health_loop(running: RunningServer, backends: Backends, store: ConfigStore[Active], health: Health,
                      timeout: float, interval: float) -> None:
    while True:
        try:
            problems = await probe(backends, store.current, timeout)
            health.down.clear()
            health.down.update(problems)
            if store.current is None:
                problems = {"config": store.last_error or "not loaded yet", **problems}
            healthy = not problems
            if healthy != health.serving:
                await running.set_serving(healthy)
                if healthy:
                    log.info("SERVING: config active and every dependency answers")
                else:
                    log.warning("NOT_SERVING", extra={"problems": problems})
                health.serving = healthy
        except Exception:
            log.exception("health probe failed")
        health.rounds += 1
        await asyncio.sleep(interval)


def served_versions(active: Active | None) -> list[tuple[str, str, str]]:
    """(collection name, concrete collection, index version) of each collection ``active`` searches. Pure."""
    if active is None:
        return []
    return [(name, served, str((active.records.get(name) or {}).get("version") or ""))
            for name, served in sorted(active.routes.items())]


@dataclass
class ServingServer:
    """A started serving process's parts (tests read ``port``, ``store`` and ``health``)."""

    running: RunningServer
    backends: Backends
    store: ConfigStore[Active]
    health: Health
    routes: RouteWatcher

    @property
    def port(self) -> int:
        return self.running.port

    async def stop(self, grace: float | None = None) -> None:
        await self.running.stop(grace)


async def start(settings: ServingSettings, backends: Backends | None = None) -> ServingServer:
    """Bind the server (NOT_SERVING), then load the config and start the watcher and health loops.

    Returns at once even when the config cannot be activated yet (a dependency
    down): the watcher keeps trying and health turns SERVING when it succeeds.
    Used by ``main`` and by tests.
    """
    backends = backends or connect(settings)
    timeout = settings.timing.dependency_timeout_seconds
    store: ConfigStore[Active] = ConfigStore(
        settings.experiments, lambda experiments: activate(experiments, backends, timeout),
        settings.timing.config_poll_seconds, on_result=lambda result: metrics.CONFIG_LOADS.labels(result).inc(),
    )
    health = Health()
    enabled = settings.events.impressions and backends.events.enabled
    signer = Signer.from_settings(settings.feedback.key.get_secret_value(),
                                  settings.feedback.user_hash_salt.get_secret_value(),
                                  settings.feedback.ttl_seconds, warn=enabled)
    impressions = Impressions(signer, backends.events.record) if enabled else None
    servicer = RetrievalServicer(Searcher(backends, settings, health.down, impressions), store,
                                 settings.timing.default_deadline_seconds, FeedbackHandler(signer, backends.events, enabled))
    access = settings.access
    gate = AccessInterceptor(KeyRing(access.api_keys_file), access.anonymous, ACCESS_RULES)
    running = await start_server(settings, register(servicer), serving=False, interceptors=[gate])
    await store.check()
    routes = RouteWatcher(store, backends, settings.timing.health_interval_seconds,
                          Freshness(settings.writer_log_database, timeout))
    tasks = [asyncio.create_task(store.run(), name="config-watcher"),
             asyncio.create_task(routes.run(), name="route-watcher"),
             asyncio.create_task(health_loop(running, backends, store, health, timeout,
                                             settings.timing.health_interval_seconds), name="health"),
             asyncio.create_task(backends.events.run(), name="impressions")]

    source = lambda: served_versions(store.current)  # noqa: E731 - read at each scrape
    metrics.INDEX_VERSIONS.sources.append(source)

    async def stop() -> None:
        metrics.INDEX_VERSIONS.sources.remove(source)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await backends.close()

    running.on_stop.append(stop)
    return ServingServer(running, backends, store, health, routes)


async def serve(settings: ServingSettings) -> None:
    server = await start(settings)
    await run_until_signal(server.running, settings.grace_seconds)


def main() -> None:
    settings = load_settings(ServingSettings)
    setup_logging(settings.log_level, settings.log_json)
    tracing.configure("mmsearch-serving")  # on only when the OTEL_* variables say so
    asyncio.run(serve(settings))
