"""Settings every online process reads (``MMSEARCH_*`` environment variables).

:class:`ProcessSettings` is what any service process has (its listening
address, logging, shutdown grace); :class:`GrpcSettings` adds what a gRPC
service has besides (its separate ``/metrics`` server, the message size).
The web service is HTTP and serves ``/metrics`` on its own port, so it
builds on :class:`ProcessSettings` only.

Services bind 127.0.0.1 by default: outside a cluster nothing is exposed
unless asked for; the chart sets ``MMSEARCH_HOST=0.0.0.0`` explicitly.
"""
from __future__ import annotations

from pydantic import Field

from mmsearch.core.settings import BaseConfig


class ProcessSettings(BaseConfig):
    host: str = Field("127.0.0.1", description="Address the server binds to (0.0.0.0 in a pod).")
    port: int = Field(50051, ge=0, le=65535, description="Listening port; 0 picks a free one.")
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable).")
    grace_seconds: float = Field(5.0, ge=0, description="Graceful-shutdown grace period on SIGTERM.")


class GrpcSettings(ProcessSettings):
    """What every gRPC service reads."""

    metrics_host: str = Field("127.0.0.1", description="Address of the Prometheus /metrics HTTP server.")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one.")
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="gRPC max message size.")
    reflection: bool = Field(True, description="Serve gRPC server reflection (grpcurl, grpcui); off in the chart.")
