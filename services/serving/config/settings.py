"""Settings of the serving service (``MMSEARCH_*`` environment variables).

Decisions:
- Every URI is configuration only: ``MMSEARCH_MILVUS_URI`` is a Milvus Lite file
  (embedded default) or ``http://milvus:19530``; ``MMSEARCH_MONGO_URI`` any
  MongoDB-wire server; ``MMSEARCH_MODEL_REPOSITORY`` a local folder or ``s3://``.
- ``MMSEARCH_TRITON_ADDRESS`` empty means no Triton: arms whose encoder backend
  is ``triton`` are refused at config load with a message saying so.
- The client's deadline is honoured; without one, ``MMSEARCH_DEFAULT_DEADLINE_MS``.
- Thread counts are explicit because the machines are small and shared:
  onnxruntime intra-op threads.
- Impressions and feedback (A/B outcomes): every response is an impression
  with a feedback token signed by ``MMSEARCH_FEEDBACK_KEY`` (see
  :mod:`mmsearch.services.serving.outcomes.tokens`); impressions and feedback go to
  ``MMSEARCH_EVENTS_DATABASE`` on ``MMSEARCH_EVENTS_MONGO_URI`` (default: the
  summary store's URI), kept ``MMSEARCH_EVENTS_TTL_DAYS`` days. A token accepts
  feedback for ``MMSEARCH_FEEDBACK_TTL_SECONDS``, which must not outlive
  the events it refers to.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field, SecretStr, ValidationInfo, field_validator

from mmsearch.core import events
from mmsearch.core.limits import RequestLimits
from mmsearch.services.runtime.settings import GrpcSettings

EXAMPLE_EXPERIMENTS = Path(__file__).parent / "examples" / "experiments.yaml"


class ServingSettings(GrpcSettings, RequestLimits):
    """What the serving service reads."""

    port: int = Field(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    experiments: Path = Field(
        EXAMPLE_EXPERIMENTS, description="Experiment config YAML (a ConfigMap mount on Kubernetes); reloaded on change."
    )
    preprocess_address: str = Field("127.0.0.1:50051", min_length=1, description="host:port of the PreprocessService.")
    triton_address: str = Field("", description="host:port of Triton's gRPC endpoint; empty: no Triton.")
    milvus_uri: str = Field("./data/milvus.db", min_length=1, description="Milvus Lite file or Milvus server URI.")
    milvus_token: str = Field("", description="Milvus token (user:password), if the server needs one.")
    mongo_uri: str = Field("mongodb://127.0.0.1:27017", min_length=1, description="MongoDB URI of the summary store.")
    model_repository: str = Field(
        "./data/models", min_length=1,
        description="Model repository (REPO of REPO/NAME/1/model.onnx + manifest.json); Triton serves the same REPO.",
    )
    onnx_intra_op_threads: int = Field(
        1, ge=0, le=256,
        description="onnxruntime intra-op threads of one inference call (0: one per core). 1 by default, for "
                    "throughput: measured on 2 cores, one thread gave 20-50% more QPS at concurrency 32 than one "
                    "per core (the event loop, gRPC and pymilvus need the other core) for 2-4 ms more p50 at "
                    "concurrency 1; set 0 where latency at low load matters more.")
    onnx_single_query_threads: int = Field(
        0, ge=0, le=256,
        description="onnxruntime intra-op threads for a query encoded while no other search is in flight "
                    "(0: one per core), on a second session when it differs from MMSEARCH_ONNX_INTRA_OP_THREADS. "
                    "At low load each query runs alone and the idle cores cut its latency; under load the "
                    "other session runs every call, so the cores stay with the concurrent work. Measured on 2 "
                    "cores (bench/search.py): the embed stage of a lone MiniLM query takes 2.7-3.1 ms with 0 "
                    "against 4.5-4.9 ms with 1, and QPS at concurrency 32 stays the same within the noise.")
    onnx_lone_query_on_loop: bool = Field(
        True, description="Run the inference of a query encoded while no other search is in flight on the event "
                          "loop's thread, not on the encoder's thread: no thread hand-off and back for a lone "
                          "query (see services/serving/backends/encoders.py OnnxEncoder for the trade-off).")
    onnx_allow_spinning: bool = Field(
        True, description="Let idle onnxruntime intra-op threads spin-wait (onnxruntime's default; only matters "
                          "with more than one intra-op thread): lower latency at low load, CPU taken from the "
                          "other stages under load.")
    default_deadline_ms: int = Field(2000, ge=10, description="Deadline of a request whose client set none.")
    dependency_timeout_ms: int = Field(
        1000, ge=10, description="Longest wait for an unreachable dependency (server selection, probes)."
    )
    encoder_timeout_ms: int = Field(5000, ge=10, description="Timeout of one (batched) Triton inference call.")
    batch_max_size: int = Field(32, ge=1, le=4096, description="Most queries in one inference call.")
    batch_max_wait_ms: float = Field(
        0.0, ge=0, le=1000,
        description="Extra wait for more queries before an inference call (0: batch only what queued while busy).",
    )
    batch_in_flight: int = Field(1, ge=1, le=64, description="Concurrent inference calls per encoder.")
    match_batch_max_size: int = Field(
        64, ge=1, le=4096, description="Most concurrent queries combined into one Milvus search (1: no batching).")
    match_in_flight: int = Field(2, ge=1, le=64, description="Concurrent Milvus searches per collection and search shape.")
    max_page_depth: int = Field(
        1000, ge=1, le=16000,
        description="Deepest result a search pages to (offset + page size); the last page stops there and a "
                    "page token beyond it is refused.")
    page_token_secret: str = Field(
        "", description="HMAC key of page tokens. Tokens are checked in full on use (collection, arm, query, "
                        "depth), so the built-in key only detects corruption; set a secret (the same on every "
                        "replica) to make them unforgeable.")
    summary_cache_documents: int = Field(
        20_000, ge=0, le=10_000_000,
        description="Summary documents kept in serving's LRU per process, keyed by collection version and "
                    "generation (exact: see services/serving/backends/summary_cache.py); 0 turns the cache off.")
    config_poll_seconds: float = Field(1.0, gt=0, description="How often the experiment file is checked for changes.")
    health_interval_seconds: float = Field(1.0, gt=0, description="How often dependencies are probed for health.")
    impressions: bool = Field(
        True, description="Record every response as an impression and give it a feedback token (false: neither, "
                          "and Feedback is refused).")
    feedback_key: SecretStr = Field(
        SecretStr(""), description="HMAC key (at least 16 characters) signing feedback tokens, shared by every "
                                   "replica; empty: a random key per process (logged as a warning).")
    user_hash_salt: SecretStr = Field(
        SecretStr(""), description="Salt of the user-id hash stored with impressions; empty: derived from the "
                                   "feedback key.")
    events_mongo_uri: str = Field("", description="MongoDB URI of the event store; empty: MMSEARCH_MONGO_URI.")
    events_database: str = Field(events.DEFAULT_DATABASE, min_length=1, pattern=r"^[A-Za-z0-9_-]+$",
                                 description="Database of the impressions and feedback collections.")
    events_ttl_days: int = Field(30, ge=1, le=3650, description="Days impressions and feedback are kept (TTL index).")
    feedback_ttl_seconds: int = Field(
        86400, ge=60, description="How long after a search its feedback token is accepted.")
    impression_buffer: int = Field(
        10000, ge=1, le=1_000_000,
        description="Impressions waiting for the event store at most; beyond, new ones are dropped and counted.")
    impression_flush_ms: float = Field(
        500, ge=0, le=60_000,
        description="Longest wait for more impressions before a write to the event store (0: write each as it "
                    "comes); a full batch is written at once.")

    @field_validator("feedback_key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        n = len(value.get_secret_value())
        if 0 < n < 16:
            raise ValueError(f"the feedback key has {n} characters; give at least 16 (e.g. `openssl rand -hex 32`)")
        return value

    @field_validator("feedback_ttl_seconds")
    @classmethod
    def _token_ttl(cls, value: int, info: ValidationInfo) -> int:
        days = info.data.get("events_ttl_days")
        if days and value > days * 86400:
            raise ValueError(f"a token accepted for {value} s would outlive the events it refers to "
                             f"(MMSEARCH_EVENTS_TTL_DAYS={days}); lower it or keep the events longer")
        return value

    @property
    def events_uri(self) -> str:
        return self.events_mongo_uri or self.mongo_uri
