"""Prometheus metrics of the web service (served at /metrics on its own port, MMSEARCH_METRICS_PORT: main.py)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

HTTP_REQUESTS = Counter(
    "mmsearch_web_requests_total",
    "HTTP requests handled by the web service, by route, method and status.",
    ["route", "method", "status"],
)
HTTP_LATENCY = Histogram(
    "mmsearch_web_request_duration_seconds",
    "HTTP request latency of the web service, by route and method.",
    ["route", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
UPSTREAM_LATENCY = Histogram(
    "mmsearch_web_upstream_duration_seconds",
    "Latency of the web service's gRPC calls to serving, by method and gRPC status code.",
    ["method", "grpc_code"],
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
