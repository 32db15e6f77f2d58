"""Serving's Prometheus metrics (the gRPC-level ones live in services.runtime.metrics)."""
from __future__ import annotations

from prometheus_client import Counter, Histogram

STAGE_LATENCY = Histogram(
    "mmsearch_serving_stage_seconds",
    "Latency of one pipeline stage, by stage, scene and arm.",
    ["stage", "scene", "arm"],
    buckets=(0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
REQUESTS = Counter(
    "mmsearch_serving_requests_total",
    "Search requests, by scene and gRPC status (OK, INVALID_ARGUMENT, UNAVAILABLE, ...).",
    ["scene", "status"],
)
EXPOSURES = Counter(
    "mmsearch_serving_exposures_total",
    "Requests served by each arm of each experiment layer.",
    ["scene", "layer", "arm"],
)
CONFIG_LOADS = Counter(
    "mmsearch_serving_config_loads_total",
    "Experiment config load attempts, by result (loaded, refused).",
    ["result"],
)
BATCH_SIZE = Histogram(
    "mmsearch_serving_batch_size",
    "Queries per backend call of the micro-batchers, by stage (preprocess, embed, match) and model or collection.",
    ["stage", "target"],
    buckets=(1, 2, 4, 8, 16, 32, 64, 128),
)
