"""Typed settings read from ``MMSEARCH_*`` environment variables.

Every settings class (services, the demo, the operator) subclasses
:class:`BaseConfig` and is loaded with :func:`load_settings`, which fails fast
with the offending variable's name.
"""
from __future__ import annotations

import re
from typing import TypeVar

from pydantic import SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict
from pydantic_settings import SettingsError as SourceParseError

ENV_PREFIX = "MMSEARCH_"


class SettingsError(SystemExit):
    """A bad environment variable; the message names it and says what is expected."""


class BaseConfig(BaseSettings):
    """Base for every settings class: ``MMSEARCH_`` prefix, unknown vars ignored."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)


S = TypeVar("S", bound=BaseConfig)


def describe_error(cls: type[BaseConfig], exc: ValidationError) -> str:
    """One line per bad field, naming its environment variable and the expectation."""
    prefix = cls.model_config.get("env_prefix", ENV_PREFIX)
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err.get("loc", ())) or "?"
        var = f"{prefix}{field.split('.')[0]}".upper()
        value = err.get("input")
        info = cls.model_fields.get(field.split(".")[0])
        secret = info is not None and info.annotation in (SecretStr, SecretStr | None)
        shown = "" if isinstance(value, dict) or secret else f" (got {value!r})"  # never echo a secret
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
