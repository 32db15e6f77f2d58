"""Settings of the web service (``MMSEARCH_*`` environment variables).

The web service is HTTP, so ``port`` is the page/API port (default 8080) and
``/metrics`` is served on that same port: one port per pod to expose and
scrape. The inherited ``metrics_host``/``metrics_port`` are therefore not used
by web (they exist for the gRPC services' separate metrics server).
"""
from __future__ import annotations

from pathlib import Path

from pydantic import Field

from services.common.settings import ServiceSettings


class WebSettings(ServiceSettings):
    """``MMSEARCH_PORT``, ``MMSEARCH_SERVING_ADDRESS``, ``MMSEARCH_REQUEST_TIMEOUT_SECONDS`` ..."""

    port: int = Field(8080, ge=0, le=65535, description="HTTP port of the page and JSON API; 0 picks a free one.")
    serving_address: str = Field(
        "127.0.0.1:50052", min_length=1, description="host:port of the serving gRPC RetrievalService."
    )
    request_timeout_seconds: float = Field(
        5.0, gt=0, le=300, description="Deadline of each gRPC call to serving (search, scenes, health)."
    )
    max_upload_bytes: int = Field(
        8 * 1024 * 1024, ge=1024, le=64 * 1024 * 1024, description="Largest accepted image upload (bytes)."
    )
    max_query_chars: int = Field(1000, ge=1, le=100_000, description="Longest accepted text query.")
    max_top_k: int = Field(100, ge=1, le=10_000, description="Largest accepted k (results per search).")
    images_dir: Path | None = Field(
        None,
        description="Optional folder served at /images/ (thumbnails of an image corpus prepared with "
        "--base-url http://<web>/images/). Unset: no /images/ route.",
    )
