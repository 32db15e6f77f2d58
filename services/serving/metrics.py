"""Serving's Prometheus metrics (the gRPC-level ones live in mmsearch.services.runtime.metrics)."""
from __future__ import annotations

from typing import Callable, Iterable

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily

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
ENCODER_CPU = Counter(
    "mmsearch_serving_encoder_cpu_seconds_total",
    "CPU seconds of the embedded encoder's threads in their onnxruntime calls, by model (intra-op threads beyond "
    "the calling one, and a lone query's call on the event loop, are not counted: under load serving runs one "
    "intra-op thread on the encoder's threads).",
    ["model"],
)

# A/B outcomes (see charts/mmsearch/README.md for the PromQL of click-through and MRR per arm).
IMPRESSIONS = Counter(
    "mmsearch_serving_impressions_total",
    "Search responses handed out with a feedback token (impressions), by scene, layer and arm.",
    ["scene", "layer", "arm"],
)
IMPRESSIONS_STORED = Counter(
    "mmsearch_serving_impressions_stored_total",
    "Impressions written to the event store.",
)
IMPRESSIONS_DROPPED = Counter(
    "mmsearch_serving_impressions_dropped_total",
    "Impressions not stored, by reason (buffer_full: the buffer was full, e.g. while the event store is down; "
    "store_refused: the store refused the batch; shutdown: not written before the process ended). Searches never "
    "fail for them.",
    ["reason"],
)
for _reason in ("buffer_full", "store_refused", "shutdown"):  # present at 0 from the start, for rates and alerts
    IMPRESSIONS_DROPPED.labels(_reason)
IMPRESSIONS_BUFFERED = Gauge(
    "mmsearch_serving_impressions_buffered",
    "Impressions waiting in the buffer for the event store.",
)
FEEDBACK = Counter(
    "mmsearch_serving_feedback_total",
    "Feedback events recorded (duplicates not counted), by scene, layer, arm and event (click, dwell, skip).",
    ["scene", "layer", "arm", "event"],
)
CLICK_RECIPROCAL_RANK = Counter(
    "mmsearch_serving_click_reciprocal_rank_total",
    "Sum of 1/rank over recorded clicks, by scene, layer and arm (divided by the clicks: MRR of clicks).",
    ["scene", "layer", "arm"],
)
FEEDBACK_RESULTS = Counter(
    "mmsearch_serving_feedback_results_total",
    "Feedback calls by result: recorded, duplicate, forged, expired, not_on_page, malformed, bad_request, "
    "unavailable, off.",
    ["result"],
)


class IndexVersions:
    """``mmsearch_serving_index_version_info{collection, served, version}`` = 1 per collection name a serving
    searches: the concrete collection it resolves to now and its index version (read at each scrape from the
    serving processes' ``sources``, so an alias move shows at the next scrape)."""

    NAME = "mmsearch_serving_index_version_info"
    HELP = "Index versions served: 1 per collection name, the concrete collection searched and its version."

    def __init__(self) -> None:
        self.sources: list[Callable[[], Iterable[tuple[str, str, str]]]] = []

    def describe(self):
        return [GaugeMetricFamily(self.NAME, self.HELP, labels=["collection", "served", "version"])]

    def collect(self):
        family = GaugeMetricFamily(self.NAME, self.HELP, labels=["collection", "served", "version"])
        seen: set[tuple[str, str, str]] = set()
        for source in list(self.sources):
            for labels in source():
                if labels not in seen:
                    seen.add(labels)
                    family.add_metric(list(labels), 1)
        yield family


INDEX_VERSIONS = IndexVersions()
REGISTRY.register(INDEX_VERSIONS)
