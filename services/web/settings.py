"""Settings of the web service (``MMSEARCH_*`` environment variables).

The web service is HTTP, so ``port`` is the page/API port (default 8080);
``/metrics`` is served on its own port (``MMSEARCH_METRICS_PORT``, as the gRPC
services do), so the public port never shows it. The request
limits (``limits``) are :class:`mmsearch.core.limits.RequestLimits`, the same
fields serving reads, so the API refuses exactly what serving would. ``tls``
is the runtime's :class:`~mmsearch.services.runtime.tls.Tls`: its CA makes the
calls to serving TLS, its certificate serves HTTPS when ``https`` is on.
"""
from __future__ import annotations

from pathlib import Path

from pydantic import model_validator

from mmsearch.core.limits import RequestLimits
from mmsearch.core.access.settings import Access, ClientAddress
from mmsearch.core.settings import Group, setting
from mmsearch.services.runtime.settings import MetricsSettings
from mmsearch.services.runtime.tls import Tls


class FeedbackLimits(Group):
    """How much feedback one client address may send (``MMSEARCH_FEEDBACK_*``)."""

    env_prefix = "FEEDBACK_"

    rate_per_second: float = setting(
        2.0, gt=0, le=10_000, unit="events per second",
        description="Feedback events (POST /api/feedback) one client address may send per second, sustained; "
                    "beyond: 429 with Retry-After.")
    burst: int = setting(30, ge=1, le=100_000, unit="events",
                         description="Feedback events one client address may send at once.")


class WebSettings(MetricsSettings):
    """``MMSEARCH_PORT``, ``MMSEARCH_SERVING_ADDRESS``, ``MMSEARCH_REQUEST_TIMEOUT_SECONDS`` ..."""

    port: int = setting(8080, ge=0, le=65535, description="HTTP port of the page and JSON API; 0 picks a free one.")
    serving_address: str = setting(
        "127.0.0.1:50052", min_length=1, description="host:port of the serving gRPC RetrievalService."
    )
    request_timeout_seconds: float = setting(
        5.0, gt=0, le=300, unit="seconds", description="Deadline of each gRPC call to serving (search, scenes, health)."
    )
    max_message_bytes: int = setting(32 * 1024 * 1024, ge=1024, unit="bytes", advanced=True, description="gRPC max message size of calls to serving.")
    limits: RequestLimits = setting(default_factory=RequestLimits)
    writer_address: str | None = setting(
        None, description="host:port of the writer's gRPC DocumentService (live writes, /api/documents). Unset: "
                          "/api/documents answers 501 (writes are not configured here).")
    write_timeout_seconds: float = setting(
        60.0, gt=0, le=600, unit="seconds",
        description="Deadline of each call to the writer (a batch is encoded and written in both stores).")
    documents_body_bytes: int = setting(
        16 * 1024 * 1024, ge=1024, le=256 * 1024 * 1024, unit="bytes",
        description="Largest body of POST /api/documents (JSON; images base64); larger: 413. Bounds what one "
                    "write holds in memory whatever the client sends.")
    access: Access = setting(default_factory=Access)
    client: ClientAddress = setting(default_factory=ClientAddress)
    feedback: FeedbackLimits = setting(default_factory=FeedbackLimits)
    serving_key_file: Path | None = setting(
        None, description="File holding the key web presents to serving (scope relay; a mounted Secret, re-read "
                          "when it changes); serving then applies the caller's own key. Unset: calls carry no key "
                          "(serving must allow anonymous callers).")
    images_dir: Path | None = setting(
        None,
        description="Optional folder served at /images/ (thumbnails of an image corpus prepared with "
        "--base-url http://<web>/images/). Unset: no /images/ route.",
    )
    tls: Tls = setting(default_factory=Tls)
    https: bool = setting(
        False, description="Serve the page and API over HTTPS with MMSEARCH_TLS_CERT_FILE/KEY_FILE (plaintext "
                           "refused; with MMSEARCH_TLS_CLIENT_AUTH, client certificates required). Off by default: "
                           "an ingress usually terminates TLS.")

    @model_validator(mode="after")
    def _https_has_a_certificate(self) -> "WebSettings":
        if self.https and not self.tls.serves:
            raise ValueError("MMSEARCH_HTTPS=true needs MMSEARCH_TLS_CERT_FILE and MMSEARCH_TLS_KEY_FILE "
                             "(the certificate the page is served with)")
        return self
