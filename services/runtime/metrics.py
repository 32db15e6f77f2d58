"""Prometheus metrics: a gRPC server interceptor and the /metrics HTTP endpoint.

The endpoint (plain HTTP on its own port, never a public one) also answers the
kubelet's probes where the service port cannot: a port serving TLS refuses the
kubelet's gRPC probe. ``GET /healthz`` is 200 while the process answers (its
event loop runs a task within a second), ``GET /readyz`` 200 while it also
reports SERVING, else 503; each body is ``{"status": ...}`` and nothing else.
"""
from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from typing import Callable
from wsgiref.simple_server import WSGIRequestHandler, make_server

import grpc
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, make_wsgi_app
from prometheus_client.exposition import ThreadingWSGIServer

GRPC_REQUESTS = Counter(
    "mmsearch_grpc_requests_total",
    "gRPC requests handled, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
)
GRPC_LATENCY = Histogram(
    "mmsearch_grpc_request_duration_seconds",
    "gRPC request latency, by method and status code.",
    ["grpc_service", "grpc_method", "grpc_code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)

SERVING = Gauge(
    "mmsearch_grpc_serving",
    "1 while the process reports SERVING for the gRPC service (health and /readyz say ready), else 0.",
    ["grpc_service"],
)


def split_method(full: str) -> tuple[str, str]:
    """``/pkg.Service/Method`` -> (``pkg.Service``, ``Method``)."""
    _, service, method = (full.split("/") + ["", ""])[:3]
    return service or "unknown", method or "unknown"


def _code_name(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> str:
    code = context.code()
    if code is None:
        return default.name
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode(code).name if isinstance(code, tuple) else str(code)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts unary requests and observes their latency by method and status code."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        service, method = split_method(handler_call_details.method)
        inner = handler.unary_unary

        async def observed(request, context):
            start = time.perf_counter()
            code = grpc.StatusCode.UNKNOWN.name
            try:
                response = await inner(request, context)
                code = _code_name(context, grpc.StatusCode.OK)
                return response
            except BaseException:
                code = _code_name(context, grpc.StatusCode.UNKNOWN)
                raise
            finally:
                GRPC_REQUESTS.labels(service, method, code).inc()
                GRPC_LATENCY.labels(service, method, code).observe(time.perf_counter() - start)

        return grpc.unary_unary_rpc_method_handler(
            observed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )


Probe = Callable[[], bool]
"""Whether the process is SERVING; raises when it cannot tell (its event loop does not answer)."""
PROBE_WAIT_S = 1.0


def loop_probe(loop: asyncio.AbstractEventLoop, serving: Callable[[], bool], wait: float = PROBE_WAIT_S) -> Probe:
    """A :data:`Probe` asked from another thread: ``serving()`` run on ``loop``, so a wedged loop is not alive."""

    async def ask() -> bool:
        return serving()

    return lambda: asyncio.run_coroutine_threadsafe(ask(), loop).result(wait)


def probe_answer(path: str, probe: Probe | None) -> tuple[int, str] | None:
    """(HTTP status, status word) of /healthz or /readyz; None for any other path. Pure but for ``probe``."""
    if path not in ("/healthz", "/readyz"):
        return None
    try:
        ready = True if probe is None else bool(probe())
    except Exception:
        return 503, "not alive"
    if path == "/healthz":
        return 200, "alive"
    return (200, "ready") if ready else (503, "not ready")


class _Quiet(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - one line per scrape or probe is noise
        pass


class MetricsEndpoint:
    """The Prometheus /metrics HTTP server with /healthz and /readyz (port 0 picks a free port).

    ``probe`` (settable after start) tells readiness; None: ready while the process answers.
    """

    def __init__(self, host: str, port: int, probe: Probe | None = None):
        self.probe = probe
        metrics = make_wsgi_app(REGISTRY)

        def app(environ, start_response):
            answer = probe_answer(environ.get("PATH_INFO", ""), self.probe)
            if answer is None:
                return metrics(environ, start_response)
            status, word = answer
            body = json.dumps({"status": word}).encode()
            start_response(f"{status} {'OK' if status == 200 else 'Service Unavailable'}",
                           [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                            ("Cache-Control", "no-store")])
            return [body]

        server_class = type("Server", (ThreadingWSGIServer,),
                            {"address_family": socket.AF_INET6 if ":" in host else socket.AF_INET})
        self._server = make_server(host, port, app, server_class, handler_class=_Quiet)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-http", daemon=True)
        self._thread.start()
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
