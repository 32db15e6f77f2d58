"""Settings of the writer service (``MMSEARCH_*`` environment variables).

``MMSEARCH_WRITER_SCENES`` names the scenes that take live writes and where
each keeps its summaries: a JSON object ``{"scene": {"collection":
"{collection}", "database": "mmsearch"}}`` (``collection`` is the MongoDB
collection, ``{collection}`` standing for the live Milvus collection's name,
as serving's ``summary.collection`` and ``sync --collection`` spell it;
``{"docs": {}}`` takes those defaults). A scene not named is
refused (``unknown scene``): writes are a choice made per scene.
"""
from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator

from mmsearch.core.access.settings import Access
from mmsearch.core.limits import RequestLimits
from mmsearch.core.settings import Group, setting
from mmsearch.services.runtime.settings import GrpcSettings

_SCENE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class SceneWrites(BaseModel):
    """Where one scene's summaries live (see module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    collection: str = Field("{collection}", min_length=1)
    database: str = Field("mmsearch", min_length=1)


class WriterLimits(RequestLimits):
    """The request limits (shared with web, serving and preprocess) and what one write may carry."""

    batch_documents: int = setting(256, ge=1, le=10_000, unit="documents",
                                   description="Most documents (or ids) one upsert, delete or get may carry.")
    document_bytes: int = setting(256 * 1024, ge=1024, le=8 * 1024 * 1024, unit="bytes",
                                  description="Largest fields of one document (its JSON).")


class Writes(Group):
    """The write queue and the write log."""

    env_prefix = "WRITER_"

    queue_documents: int = setting(
        2048, ge=1, le=1_000_000, unit="documents",
        description="Documents admitted but not yet acknowledged, all writes together; a write that would go "
                    "over is refused RESOURCE_EXHAUSTED with retry-after (web: 429 and Retry-After).")
    retry_after_seconds: float = setting(1.0, gt=0, le=600, unit="seconds",
                                         description="The retry-after a write refused for a full queue carries.")
    log_database: str = setting("mmsearch", min_length=1,
                                description="MongoDB database of the write log (collections writes and counters).")
    fetch_timeout_seconds: float = setting(5.0, gt=0, le=120, unit="seconds",
                                           description="Longest fetch of an image URL.")
    allow_private_urls: bool = setting(
        False, advanced=True,
        description="Let image URLs name private, loopback and link-local addresses (tests and a laptop demo "
                    "only: on a cluster that is server-side request forgery).")
    encoder_threads: int = setting(0, ge=0, le=256, unit="threads",
                                   description="onnxruntime intra-op threads of the document towers; 0: its default.")
    nice: int = setting(
        10, ge=0, le=19, advanced=True,
        description="How much the writer lowers its CPU priority at start (os.nice): where it shares cores with "
                    "serving (one node, a laptop), encoding documents yields to searches; 0 keeps the default.")
    repair_interval_seconds: float = setting(
        2.0, gt=0, le=3600, unit="seconds", advanced=True,
        description="How often writes left pending (a store that failed mid-batch) are re-applied.")


class WriterSettings(GrpcSettings):
    """What the writer service reads."""

    port: int = setting(50053, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    milvus_uri: str = setting("./data/milvus.db", min_length=1, description="Milvus Lite file or Milvus server URI.")
    milvus_token: str = setting("", description="Milvus token (user:password), if the server needs one.")
    mongo_uri: str = setting("mongodb://127.0.0.1:27017", min_length=1, description="MongoDB URI of the summary store.")
    model_repository: str = setting(
        "./data/models", min_length=1,
        description="Model repository holding the document towers the live collections record.")
    writer_scenes: dict[str, SceneWrites] = setting(
        default_factory=dict, shown_default="none",
        description='Scenes that take live writes: {"scene": {"collection": "{collection}", "database": '
                    '"mmsearch"}}; {"docs": {}} takes those defaults.')
    dependency_timeout_seconds: float = setting(5.0, ge=0.01, le=600, unit="seconds",
                                                description="Longest wait for Milvus or MongoDB on one call.")
    limits: WriterLimits = setting(default_factory=WriterLimits)
    writes: Writes = setting(default_factory=Writes)
    access: Access = setting(default_factory=Access)

    @field_validator("writer_scenes", mode="before")
    @classmethod
    def _scenes(cls, value):
        if isinstance(value, dict):
            for name in value:
                if not _SCENE.match(str(name)):
                    raise ValueError(f"scene {name!r}: letters, digits and underscores, starting with a letter")
        return value
