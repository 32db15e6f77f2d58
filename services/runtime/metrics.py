"""Prometheus metrics: a gRPC server interceptor and the /metrics HTTP endpoint."""
from __future__ import annotations

import time

import grpc
from prometheus_client import REGISTRY, Counter, Histogram, start_http_server

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


class MetricsEndpoint:
    """The Prometheus /metrics HTTP server (port 0 picks a free port)."""

    def __init__(self, host: str, port: int):
        self._server, self._thread = start_http_server(port, addr=host, registry=REGISTRY)
        self.port: int = self._server.server_port

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
