"""``mmsearch serve web``: the page and JSON API on ``MMSEARCH_HOST:MMSEARCH_PORT`` (default 8080; HTTPS
with ``MMSEARCH_HTTPS``), and
Prometheus ``/metrics`` on ``MMSEARCH_METRICS_HOST:MMSEARCH_METRICS_PORT`` (default 9090), as the gRPC
services serve theirs: never on the public port.

Request lines and header fields may be as long as a query within the request
limits needs (:mod:`mmsearch.services.web.protocol`); longer ones get a JSON 400.

On SIGTERM/SIGINT the listener closes, in-flight requests get
``MMSEARCH_GRACE_SECONDS`` to finish, then the gRPC channel closes; the process
exits within the grace period and a few seconds whatever hangs (a client that
never finishes its request, a stuck call: :mod:`mmsearch.services.runtime.shutdown`).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from aiohttp import web

from mmsearch.core.logs import setup_logging
from mmsearch.services.runtime import tracing
from mmsearch.core.settings import load_settings
from mmsearch.services.runtime.metrics import MetricsEndpoint
from mmsearch.services.runtime.shutdown import signalled, stop_within
from mmsearch.services.runtime.tls import https_context
from mmsearch.services.web.app import create_app
from mmsearch.services.web.protocol import WebRunner, max_request_line_bytes
from mmsearch.services.web.settings import WebSettings

log = logging.getLogger(__name__)


@dataclass
class RunningWeb:
    runner: web.AppRunner
    port: int
    metrics: MetricsEndpoint

    @property
    def metrics_port(self) -> int:
        return self.metrics.port

    async def stop(self) -> None:
        try:
            await self.runner.cleanup()
        finally:
            self.metrics.close()


async def start_web(settings: WebSettings) -> RunningWeb:
    """Bind and start the HTTP server and its /metrics server (port 0 picks a free one)."""
    # HTTPS with MMSEARCH_HTTPS, its certificate following the files (a TlsError names the variables).
    ssl_context = https_context(settings.tls) if settings.https else None
    runner = WebRunner(create_app(settings), access_log=None, shutdown_timeout=settings.grace_seconds,
                       max_line_size=max_request_line_bytes(settings.limits))
    await runner.setup()
    site = web.TCPSite(runner, settings.host, settings.port, reuse_port=False, ssl_context=ssl_context)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot bind the web server to {settings.host}:{settings.port} "
                      f"(MMSEARCH_HOST/MMSEARCH_PORT): {exc}") from exc
    try:
        metrics = MetricsEndpoint(settings.metrics_host, settings.metrics_port)
    except OSError as exc:
        await runner.cleanup()
        raise OSError(f"cannot bind the /metrics server to {settings.metrics_host}:{settings.metrics_port} "
                      f"(MMSEARCH_METRICS_HOST/MMSEARCH_METRICS_PORT): {exc}") from exc
    port = runner.addresses[0][1]  # the bound port when settings.port is 0
    log.info("web server started", extra={"port": port, "metrics_port": metrics.port, "https": settings.https,
                                          "serving_address": settings.serving_address})
    return RunningWeb(runner, port, metrics)


async def serve(settings: WebSettings) -> None:
    running = await start_web(settings)
    await signalled()
    await stop_within(running.stop(), settings.grace_seconds)


def main() -> None:
    settings = load_settings(WebSettings)
    setup_logging(settings.log_level, settings.log_json)
    tracing.configure("mmsearch-web")  # on only when the OTEL_* variables say so
    asyncio.run(serve(settings))
