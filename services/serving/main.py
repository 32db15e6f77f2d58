"""``mmsearch serve serving``: start the RetrievalService.

The port is bound first with health NOT_SERVING. Two background loops then
run for the life of the process: the config watcher (loads the experiment
file, reloads it on change, retries a refused activation) and the health
loop (probes preprocess, encoders, Milvus and MongoDB; SERVING only while a
config is active and every dependency answers, so it recovers by itself).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from services.common.logs import setup_logging
from services.common.server import RunningServer, run_until_signal, start_server
from services.common.settings import load_settings
from services.serving import metrics
from services.serving.experiments import ConfigStore
from services.serving.pipeline import Active, Pipeline
from services.serving.service import RetrievalServicer, register
from services.serving.settings import ServingSettings

log = logging.getLogger(__name__)


async def _health_loop(running: RunningServer, pipeline: Pipeline, store: ConfigStore[Active],
                       interval: float) -> None:
    serving: bool | None = None
    while True:
        try:
            problems = await pipeline.probe(store.current)
            if store.current is None:
                problems = {"config": store.last_error or "not loaded yet", **problems}
            healthy = not problems
            if healthy != serving:
                await running.set_serving(healthy)
                if healthy:
                    log.info("SERVING: config active and every dependency answers")
                else:
                    log.warning("NOT_SERVING", extra={"problems": problems})
                serving = healthy
        except Exception:
            log.exception("health probe failed")
        await asyncio.sleep(interval)


@dataclass
class ServingServer:
    """A started serving process's parts (tests read ``port`` and ``store``)."""

    running: RunningServer
    pipeline: Pipeline
    store: ConfigStore[Active]

    @property
    def port(self) -> int:
        return self.running.port

    async def stop(self, grace: float | None = None) -> None:
        await self.running.stop(grace)


async def start(settings: ServingSettings) -> ServingServer:
    """Bind the server (NOT_SERVING), then load the config and start the watcher and health loops.

    Returns at once even when the config cannot be activated yet (a dependency
    down): the watcher keeps trying and health turns SERVING when it succeeds.
    Used by ``main`` and by tests.
    """
    pipeline = Pipeline(settings)
    store: ConfigStore[Active] = ConfigStore(
        settings.experiments, pipeline.activate, settings.config_poll_seconds,
        on_result=lambda result: metrics.CONFIG_LOADS.labels(result).inc(),
    )
    servicer = RetrievalServicer(pipeline, store)
    running = await start_server(settings, register(servicer), serving=False)
    await store.check()
    tasks = [asyncio.create_task(store.run(), name="config-watcher"),
             asyncio.create_task(_health_loop(running, pipeline, store, settings.health_interval_seconds),
                                 name="health")]

    async def stop() -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pipeline.close()

    running.on_stop.append(stop)
    return ServingServer(running, pipeline, store)


async def serve(settings: ServingSettings) -> None:
    server = await start(settings)
    await run_until_signal(server.running, settings.grace_seconds)


def main() -> None:
    settings = load_settings(ServingSettings)
    setup_logging(settings.log_level, settings.log_json)
    asyncio.run(serve(settings))
