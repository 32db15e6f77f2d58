"""The one gRPC server factory every service uses.

``start_server`` binds a ``grpc.aio`` server (port 0 picks a free port) with:
the standard ``grpc.health.v1`` health service, server reflection (unless
``MMSEARCH_REFLECTION=false``), the request guard (a malformed request is
INVALID_ARGUMENT, never library text: :mod:`mmsearch.services.runtime.guard`), the
Prometheus interceptor and a ``/metrics`` endpoint (always plaintext: it is
not on a public port; its ``/healthz`` and ``/readyz`` are the kubelet's probes of a TLS port). With ``MMSEARCH_TLS_CERT_FILE`` set the port serves TLS
only, its certificate re-read on rotation (:mod:`mmsearch.services.runtime.tls`). ``run_until_signal``
serves until SIGTERM/SIGINT, then reports NOT_SERVING and stops gracefully.
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Iterable, Sequence

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from mmsearch.core.channels import message_options
from mmsearch.services.runtime import tracing
from mmsearch.services.runtime.guard import RequestGuard
from mmsearch.services.runtime.metrics import SERVING, MetricsEndpoint, MetricsInterceptor, loop_probe
from mmsearch.services.runtime.settings import GrpcSettings
from mmsearch.services.runtime.shutdown import EXIT_SLACK_S, signalled, stop_within
from mmsearch.services.runtime.tls import Watched, server_credentials

__all__ = ["EXIT_SLACK_S", "RunningServer", "run_until_signal", "start_server"]

log = logging.getLogger(__name__)

MAX_CONNECTION_AGE_MS = 300_000
MAX_CONNECTION_AGE_GRACE_MS = 30_000

Registrar = Callable[[grpc.aio.Server], Iterable[str]]
"""Adds servicers to the server and returns their full service names."""


@dataclass
class RunningServer:
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: list[str]
    metrics: MetricsEndpoint | None = None
    on_stop: list[Callable[[], Awaitable[None] | None]] = field(default_factory=list)
    tls: Watched | None = None  # the port's certificate files when it serves TLS (``tls.reloads`` counts rotations)
    serving: bool = False  # what health says of every service: /readyz on the metrics port answers from it

    @property
    def metrics_port(self) -> int | None:
        return self.metrics.port if self.metrics else None

    async def set_serving(self, serving: bool) -> None:
        status = (
            health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        )
        for name in ["", *self.service_names]:
            await self.health.set(name, status)
        for name in self.service_names:
            SERVING.labels(name).set(1 if serving else 0)
        self.serving = serving

    async def stop(self, grace: float | None = None) -> None:
        await self.set_serving(False)
        await self.server.stop(grace)
        for hook in self.on_stop:
            result = hook()
            if asyncio.iscoroutine(result):
                await result
        if self.metrics:
            self.metrics.close()
            self.metrics = None


async def start_server(
    settings: GrpcSettings,
    register: Registrar,
    *,
    serving: bool = True,
    metrics: bool = True,
    interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
) -> RunningServer:
    """Build, bind and start a server; health is SERVING at once unless ``serving=False``. ``interceptors``
    run inside the guard (they see parsed requests), e.g. :class:`mmsearch.services.runtime.access.AccessInterceptor`."""
    # A connection lives at most MAX_CONNECTION_AGE_MS (calls in flight get the grace after it): clients then
    # connect again and re-resolve a headless Service's name, so replicas added by a scale-up get calls too.
    options = [*message_options(settings.max_message_bytes), ("grpc.so_reuseport", 0),
               ("grpc.max_connection_age_ms", MAX_CONNECTION_AGE_MS),
               ("grpc.max_connection_age_grace_ms", MAX_CONNECTION_AGE_GRACE_MS)]
    # The metrics interceptor wraps the guard's handler: it counts what the guard answers too; the trace's
    # server span (only when tracing is on) wraps them all.
    server = grpc.aio.server(interceptors=[*tracing.server_interceptors(), MetricsInterceptor(), RequestGuard(),
                                           *interceptors], options=options)
    names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    if settings.reflection:
        reflection.enable_server_reflection(
            [*names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME], server
        )
    address = f"{settings.host}:{settings.port}"
    watched = None
    try:
        if settings.tls.serves:
            credentials, watched = server_credentials(settings.tls)
            port = server.add_secure_port(address, credentials)
        else:
            port = server.add_insecure_port(address)
    except RuntimeError:  # grpc raises RuntimeError when the address is in use or cannot be resolved
        port = 0
    if port == 0:
        raise OSError(f"cannot bind the gRPC server to {address} (MMSEARCH_HOST/MMSEARCH_PORT)")
    endpoint = MetricsEndpoint(settings.metrics_host, settings.metrics_port) if metrics else None
    await server.start()
    running = RunningServer(server, port, health_servicer, names, endpoint, tls=watched)
    if endpoint is not None:  # /healthz and /readyz: the kubelet's probes of a port that serves TLS
        endpoint.probe = loop_probe(asyncio.get_running_loop(), lambda: running.serving)
    await running.set_serving(serving)
    log.info("gRPC server started", extra={"port": port, "services": names, "metrics_port": running.metrics_port,
                                           "tls": settings.tls.serves, "client_auth": settings.tls.client_auth})
    return running


async def run_until_signal(running: RunningServer, grace: float) -> None:
    """Serve until SIGTERM or SIGINT (or the server ends), then stop gracefully (NOT_SERVING first):
    in-flight calls get ``grace`` seconds, and stopping is bounded (:func:`shutdown.stop_within`)."""
    waiter = asyncio.create_task(running.server.wait_for_termination())
    stopper = asyncio.create_task(signalled())
    await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
    await stop_within(running.stop(grace), grace)
    for task in (waiter, stopper):
        task.cancel()
