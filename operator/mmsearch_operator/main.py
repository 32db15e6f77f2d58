"""``mmsearch operator``: run the IndexJob operator (kopf) until SIGTERM.

Settings (environment, ``MMSEARCH_OPERATOR_`` prefix): the namespace to
watch comes from ``--namespace``, else ``MMSEARCH_OPERATOR_NAMESPACE``
(unset = all namespaces, cluster-wide). One replica: kopf runs standalone (no
peering objects), so the Deployment must not scale it beyond 1.
"""
from __future__ import annotations

import asyncio

import kopf
from pydantic_settings import SettingsConfigDict

from mmsearch.operator.handlers import Clock, build_memo, build_registry, utc_now
from mmsearch.core.logs import setup_logging
from mmsearch.core.settings import BaseConfig, load_settings, setting


class OperatorSettings(BaseConfig):
    """What the operator reads from ``MMSEARCH_OPERATOR_*`` variables."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_OPERATOR_", extra="ignore", case_sensitive=False)

    namespace: str = setting("", description="The namespace to watch (`mmsearch operator --namespace` wins); "
                                             "empty: all namespaces, cluster-wide.")
    liveness_host: str = setting("0.0.0.0", description="Address of the liveness endpoint.")
    liveness_port: int = setting(8080, ge=1, le=65535, description="Port of http://HOST:PORT/healthz.")
    resync_seconds: float = setting(60.0, gt=0, unit="seconds", advanced=True, description="Re-check unfinished IndexJobs this often.")
    log_level: str = setting("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$",
                             description="debug, info, warning, error or critical.")
    log_json: bool = setting(True, description="JSON log lines (false: human-readable).")


def liveness_endpoint(settings: OperatorSettings) -> str:
    return f"http://{settings.liveness_host}:{settings.liveness_port}/healthz"


async def run(namespace: str | None, settings: OperatorSettings, *,
              connection: kopf.ConnectionInfo | None = None, stop_flag: asyncio.Event | None = None,
              clock: Clock = utc_now) -> None:
    """Run the operator in the current event loop (the tests call this with an emulator's connection and
    a clock of their own)."""
    memo = build_memo(clock=clock)
    try:
        await kopf.operator(
            registry=build_registry(connection, resync_seconds=settings.resync_seconds),
            memo=memo,
            clusterwide=namespace is None,
            namespaces=[namespace] if namespace else [],
            standalone=True,
            liveness_endpoint=liveness_endpoint(settings),
            stop_flag=stop_flag,
        )
    finally:
        await memo.kube.close()  # after kopf stopped: timers may call the API until then


def main(namespace: str | None) -> None:
    """Entry point of ``mmsearch operator``: watch ``namespace`` (None: all namespaces)."""
    settings = load_settings(OperatorSettings)
    setup_logging(settings.log_level, settings.log_json)
    asyncio.run(run(namespace or settings.namespace or None, settings))
