"""Typed settings read from ``MMSEARCH_*`` environment variables.

Every service subclasses :class:`ServiceSettings` and loads it with
:func:`load_settings`, which fails fast with the offending variable's name.
"""
from __future__ import annotations

import re
from typing import TypeVar

from pydantic import Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceParseError

ENV_PREFIX = "MMSEARCH_"


class SettingsError(SystemExit):
    """A bad environment variable; the message names it and says what is expected."""


class BaseConfig(BaseSettings):
    """Base for every settings class: ``MMSEARCH_`` prefix, unknown vars ignored."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)


class ServiceSettings(BaseConfig):
    """What every gRPC service reads."""

    host: str = Field("0.0.0.0", description="Address the gRPC server binds to.")
    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    metrics_host: str = Field("0.0.0.0", description="Address of the Prometheus /metrics HTTP server.")
    metrics_port: int = Field(9090, ge=0, le=65535, description="Prometheus /metrics port; 0 picks a free one.")
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")
    log_json: bool = Field(True, description="JSON log lines (false: human-readable).")
    grace_seconds: float = Field(5.0, ge=0, description="Graceful-shutdown grace period on SIGTERM.")
    max_message_bytes: int = Field(32 * 1024 * 1024, ge=1024, description="gRPC max message size.")


S = TypeVar("S", bound=BaseConfig)


def describe_error(cls: type[BaseConfig], exc: ValidationError) -> str:
    """One line per bad field, naming its environment variable and the expectation."""
    prefix = cls.model_config.get("env_prefix", ENV_PREFIX)
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "?"
        var = f"{prefix}{field.split('.')[0]}".upper()
        value = err.get("input")
        shown = "" if isinstance(value, dict) else f" (got {value!r})"
        lines.append(f"invalid environment variable {var}{shown}: {err.get('msg')}")
    return "; ".join(lines)


def describe_parse_error(cls: type[BaseConfig], exc: SourceParseError) -> str:
    """pydantic-settings' JSON decoding error of a complex field (dict/list), with the variable named."""
    match = re.search(r'field "([^"]+)"', str(exc))
    var = f"{cls.model_config.get('env_prefix', ENV_PREFIX)}{match.group(1) if match else '?'}".upper()
    return f"invalid environment variable {var}: not valid JSON ({exc.__cause__ or exc})"


def load_settings(cls: type[S], **overrides) -> S:
    """Build ``cls`` from the environment (and explicit overrides), or exit with a clear message."""
    try:
        return cls(**overrides)
    except ValidationError as exc:
        raise SettingsError(describe_error(cls, exc)) from None
    except SourceParseError as exc:
        raise SettingsError(describe_parse_error(cls, exc)) from None
