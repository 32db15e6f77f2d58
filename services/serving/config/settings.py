"""Settings of the serving service (``MMSEARCH_*`` environment variables).

Decisions:
- Every URI is configuration only: ``MMSEARCH_MILVUS_URI`` is a Milvus Lite file
  (embedded default) or ``http://milvus:19530``; ``MMSEARCH_MONGO_URI`` any
  MongoDB-wire server; ``MMSEARCH_MODEL_REPOSITORY`` a local folder or ``s3://``.
- ``MMSEARCH_TRITON_ADDRESS`` empty means no Triton: arms whose encoder backend
  is ``triton`` are refused at config load with a message saying so.
- The client's deadline is honoured; without one, ``MMSEARCH_DEFAULT_DEADLINE_SECONDS``.
  Every time a user sets is in seconds; the old ``_MS`` names are read, converted,
  with a warning (:data:`ServingSettings.deprecated`).
- Settings are grouped by concern (``limits``, ``timing``, ``onnx``,
  ``batching``, ``match``, ``events``, ``feedback``); the variables stay flat
  (:mod:`mmsearch.core.settings`).
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

from pydantic import SecretStr, field_validator, model_validator

from mmsearch.core import events
from mmsearch.core.access.settings import Access
from mmsearch.core.limits import RequestLimits
from mmsearch.core.settings import Deprecated, Group, ms_to_seconds, setting
from mmsearch.services.runtime.settings import GrpcSettings

EXAMPLE_EXPERIMENTS = Path(__file__).parent / "examples" / "experiments.yaml"


class ServingLimits(RequestLimits):
    """The request limits (shared with web and preprocess) and how deep a search pages."""

    page_depth: int = setting(
        1000, ge=1, le=16000, unit="results",
        description="Deepest result a search pages to (offset + page size); the last page stops there and a "
                    "page token beyond it is refused.")


class Timing(Group):
    """Deadlines, timeouts and polling periods, in seconds."""

    default_deadline_seconds: float = setting(2.0, ge=0.01, le=3600, unit="seconds",
                                              description="Deadline of a request whose client set none.")
    dependency_timeout_seconds: float = setting(
        1.0, ge=0.01, le=600, unit="seconds",
        description="Longest wait for an unreachable dependency (server selection, probes).")
    encoder_timeout_seconds: float = setting(5.0, ge=0.01, le=600, unit="seconds",
                                             description="Timeout of one (batched) Triton inference call.")
    config_poll_seconds: float = setting(1.0, gt=0, unit="seconds", advanced=True,
                                         description="How often the experiment file is checked for changes.")
    health_interval_seconds: float = setting(1.0, gt=0, unit="seconds", advanced=True,
                                             description="How often dependencies are probed for health.")


class Onnx(Group):
    """The embedded (onnxruntime) query encoder."""

    env_prefix = "ONNX_"

    intra_op_threads: int = setting(
        1, ge=0, le=256, unit="threads",
        description="onnxruntime intra-op threads of one inference call (0: one per core). 1 favours throughput "
                    "under concurrent load (the event loop, gRPC and pymilvus need the other cores); 0 favours "
                    "latency at low load.")
    single_query_threads: int = setting(
        0, ge=0, le=256, unit="threads", advanced=True,
        description="onnxruntime intra-op threads for a query encoded while no other search is in flight "
                    "(0: one per core), on a second session when it differs from MMSEARCH_ONNX_INTRA_OP_THREADS: "
                    "at low load each query runs alone and the idle cores cut its latency.")


class Batching(Group):
    """Micro-batching of queries into one inference call."""

    env_prefix = "BATCH_"

    max_size: int = setting(
        16, ge=1, le=4096, unit="queries",
        description="Most queries in one inference call. Under load, calls of this size keep the encoder and the "
                    "event loop busy at once (one call is encoded while the last one's searches go on), where one call "
                    "of all waiting queries leaves the encoder idle while they are matched.")
    max_wait_seconds: float = setting(
        0.0, ge=0, le=1, unit="seconds", advanced=True,
        description="Extra wait for more queries before an inference call (0: batch only what queued while busy).")
    in_flight: int = setting(1, ge=1, le=64, unit="calls", advanced=True,
                             description="Concurrent inference calls per encoder.")


class Match(Group):
    """Batching of concurrent Milvus searches."""

    env_prefix = "MATCH_"

    batch_max_size: int = setting(64, ge=1, le=4096, unit="queries", advanced=True,
                                  description="Most concurrent queries combined into one Milvus search (1: no batching).")
    in_flight: int = setting(2, ge=1, le=64, unit="searches", advanced=True,
                             description="Concurrent Milvus searches per collection and search shape.")


class Events(Group):
    """Where impressions and feedback (the A/B outcomes) are stored."""

    env_prefix = "EVENTS_"

    impressions: bool = setting(
        True, env="IMPRESSIONS",
        description="Record every response as an impression and give it a feedback token (false: neither, and "
                    "Feedback is refused).")
    mongo_uri: str = setting("", description="MongoDB URI of the event store; empty: MMSEARCH_MONGO_URI.")
    database: str = setting(events.DEFAULT_DATABASE, min_length=1, pattern=r"^[A-Za-z0-9_-]+$",
                            description="Database of the impressions and feedback collections.")
    ttl_days: int = setting(30, ge=1, le=3650, unit="days", description="Days impressions and feedback are kept (TTL index).")
    flush_seconds: float = setting(
        0.5, ge=0, le=60, unit="seconds", advanced=True, env="IMPRESSION_FLUSH_SECONDS",
        description="Longest wait for more impressions before a write to the event store (0: write each as it "
                    "comes); a full batch is written at once.")


class Feedback(Group):
    """The feedback tokens every response carries."""

    env_prefix = "FEEDBACK_"

    key: SecretStr = setting(
        SecretStr(""), description="HMAC key (at least 16 characters) signing feedback tokens, shared by every "
                                   "replica; empty: a random key per process (logged as a warning).")
    ttl_seconds: int = setting(86400, ge=60, unit="seconds",
                               description="How long after a search its feedback token is accepted.")
    user_hash_salt: SecretStr = setting(
        SecretStr(""), env="USER_HASH_SALT",
        description="Salt of the user-id hash stored with impressions; empty: derived from the feedback key.")

    @field_validator("key")
    @classmethod
    def _key_length(cls, value: SecretStr) -> SecretStr:
        n = len(value.get_secret_value())
        if 0 < n < 16:
            raise ValueError(f"the feedback key has {n} characters; give at least 16 (e.g. `openssl rand -hex 32`)")
        return value


class ServingSettings(GrpcSettings):
    """What the serving service reads."""

    deprecated = (
        Deprecated("MMSEARCH_DEFAULT_DEADLINE_MS", "MMSEARCH_DEFAULT_DEADLINE_SECONDS", ms_to_seconds, "in seconds"),
        Deprecated("MMSEARCH_DEPENDENCY_TIMEOUT_MS", "MMSEARCH_DEPENDENCY_TIMEOUT_SECONDS", ms_to_seconds, "in seconds"),
        Deprecated("MMSEARCH_ENCODER_TIMEOUT_MS", "MMSEARCH_ENCODER_TIMEOUT_SECONDS", ms_to_seconds, "in seconds"),
        Deprecated("MMSEARCH_BATCH_MAX_WAIT_MS", "MMSEARCH_BATCH_MAX_WAIT_SECONDS", ms_to_seconds, "in seconds"),
        Deprecated("MMSEARCH_IMPRESSION_FLUSH_MS", "MMSEARCH_IMPRESSION_FLUSH_SECONDS", ms_to_seconds, "in seconds"),
    )

    port: int = setting(50052, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    experiments: Path = setting(
        EXAMPLE_EXPERIMENTS, shown_default="the bundled example (services/serving/config/examples/experiments.yaml)",
        description="Experiment config YAML (a ConfigMap mount on Kubernetes); reloaded on change."
    )
    preprocess_address: str = setting("127.0.0.1:50051", min_length=1, description="host:port of the PreprocessService.")
    triton_address: str = setting("", description="host:port of Triton's gRPC endpoint; empty: no Triton.")
    milvus_uri: str = setting("./data/milvus.db", min_length=1, description="Milvus Lite file or Milvus server URI.")
    milvus_token: str = setting("", description="Milvus token (user:password), if the server needs one.")
    mongo_uri: str = setting("mongodb://127.0.0.1:27017", min_length=1, description="MongoDB URI of the summary store.")
    model_repository: str = setting(
        "./data/models", min_length=1,
        description="Model repository (REPO of REPO/NAME/1/model.onnx + manifest.json); Triton serves the same REPO.",
    )
    page_token_secret: str = setting(
        "", description="HMAC key of page tokens, the same on every replica; empty: a random key per process "
                        "(logged as a warning), so a next page must come back to the replica that served the "
                        "first. Tokens are also checked in full on use (collection, arm, query, user, depth, pool).")
    summary_cache_documents: int = setting(
        20_000, ge=0, le=10_000_000, unit="documents",
        description="Summary documents kept in serving's LRU per process, keyed by collection version and "
                    "generation, live writes evicting their ids (exact: see services/serving/backends/summary_cache.py); "
                    "0 turns the cache off.")
    writer_log_database: str = setting(
        "mmsearch", min_length=1,
        description="MongoDB database of the live writes' log, on MMSEARCH_MONGO_URI (the writer's setting of the "
                    "same name): each round, the summaries of the ids written since are evicted from the cache.")
    inference_cache_queries: int = setting(
        10_000, ge=0, le=10_000_000, unit="queries",
        description="Query vectors kept per encoder model in serving's LRU, keyed by the query's token ids and the "
                    "model version (exact: see services/serving/backends/inference_cache.py); 0 turns the cache off.")
    limits: ServingLimits = setting(default_factory=ServingLimits)
    timing: Timing = setting(default_factory=Timing)
    onnx: Onnx = setting(default_factory=Onnx)
    batching: Batching = setting(default_factory=Batching)
    match: Match = setting(default_factory=Match)
    events: Events = setting(default_factory=Events)
    feedback: Feedback = setting(default_factory=Feedback)
    access: Access = setting(default_factory=Access)

    @model_validator(mode="after")
    def _token_ttl(self) -> "ServingSettings":
        days, ttl = self.events.ttl_days, self.feedback.ttl_seconds
        if ttl > days * 86400:
            raise ValueError(f"a feedback token accepted for {ttl} s (MMSEARCH_FEEDBACK_TTL_SECONDS) would outlive "
                             f"the events it refers to (MMSEARCH_EVENTS_TTL_DAYS={days}); lower it or keep the "
                             "events longer")
        return self

    @property
    def events_uri(self) -> str:
        return self.events.mongo_uri or self.mongo_uri
