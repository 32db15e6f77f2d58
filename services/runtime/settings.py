"""Settings every online process reads (``MMSEARCH_*`` environment variables).

:class:`ProcessSettings` is what any service process has (its listening
address, logging, shutdown grace); :class:`MetricsSettings` adds the address
of its separate Prometheus ``/metrics`` server (every service has one, the web
service too: metrics never share the public port); :class:`GrpcSettings` adds
what a gRPC service has besides (the message size, reflection, TLS of its
port and of its calls: :mod:`mmsearch.services.runtime.tls`).

Services bind 127.0.0.1 by default: outside a cluster nothing is exposed
unless asked for; the chart sets ``MMSEARCH_HOST=0.0.0.0`` explicitly.
"""
from __future__ import annotations

from mmsearch.core.settings import BaseConfig, setting
from mmsearch.services.runtime.tls import Tls


class ProcessSettings(BaseConfig):
    host: str = setting("127.0.0.1", description="Address the server binds to (0.0.0.0 in a pod).")
    port: int = setting(50051, ge=0, le=65535, description="Listening port; 0 picks a free one.")
    log_level: str = setting("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$",
                             description="debug, info, warning, error or critical.")
    log_json: bool = setting(True, description="JSON log lines (false: human-readable).")
    grace_seconds: float = setting(5.0, ge=0, unit="seconds", description="Graceful-shutdown grace period on SIGTERM.")


class MetricsSettings(ProcessSettings):
    """A service process with its separate Prometheus ``/metrics`` server
    (:class:`mmsearch.services.runtime.metrics.MetricsEndpoint`)."""

    metrics_host: str = setting("127.0.0.1", description="Address of the Prometheus /metrics HTTP server.")
    metrics_port: int = setting(9090, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one.")


class GrpcSettings(MetricsSettings):
    """What every gRPC service reads."""

    max_message_bytes: int = setting(32 * 1024 * 1024, ge=1024, unit="bytes", advanced=True, description="gRPC max message size.")
    reflection: bool = setting(True, description="Serve gRPC server reflection (grpcurl, grpcui); off in the chart.")
    tls: Tls = setting(default_factory=Tls)
