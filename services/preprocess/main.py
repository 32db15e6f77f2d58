"""``mmsearch serve preprocess``: start the PreprocessService.

The port is bound first with health NOT_SERVING, the registry is loaded
(S3 folders downloaded once), then health turns SERVING; a registry entry
that cannot be loaded stops the process with a message naming it.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from mmsearch.core.logs import setup_logging
from mmsearch.services.runtime import tracing
from mmsearch.services.runtime.server import RunningServer, run_until_signal, start_server
from mmsearch.core.settings import load_settings
from mmsearch.services.preprocess.models import ModelLoadError, load_models
from mmsearch.services.preprocess.service import PreprocessServicer, check_response_fits, register
from mmsearch.services.preprocess.settings import PreprocessSettings

log = logging.getLogger(__name__)


async def start(settings: PreprocessSettings) -> RunningServer:
    """Bind the server, load the models, then report SERVING (used by main and by tests)."""
    executor = ThreadPoolExecutor(settings.image_threads, thread_name_prefix="preprocess-images")
    servicer = PreprocessServicer(settings, executor)
    running = await start_server(settings, register(servicer), serving=False)
    running.on_stop.append(lambda: executor.shutdown(wait=False, cancel_futures=True))
    try:
        models = await asyncio.to_thread(load_models, settings.models)
        check_response_fits(settings, models)
    except ValueError as exc:
        await running.stop(0)
        raise ModelLoadError(str(exc)) from None
    except BaseException:
        await running.stop(0)
        raise
    servicer.set_models(models)
    await running.set_serving(True)
    log.info("models loaded: SERVING", extra={"models": sorted(models), "port": running.port})
    return running


async def serve(settings: PreprocessSettings) -> None:
    running = await start(settings)
    await run_until_signal(running, settings.grace_seconds)


def main() -> None:
    settings = load_settings(PreprocessSettings)
    setup_logging(settings.log_level, settings.log_json)
    tracing.configure("mmsearch-preprocess")  # on only when the OTEL_* variables say so
    try:
        asyncio.run(serve(settings))
    except ModelLoadError as exc:
        log.error("cannot start: %s", exc)
        raise SystemExit(f"error: {exc}") from None
