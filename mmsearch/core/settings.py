"""Typed settings read from ``MMSEARCH_*`` environment variables.

Every settings class (services, the demo, the operator, the artifact store)
subclasses :class:`BaseConfig` and is loaded with :func:`load_settings`, which
fails fast with the offending variable's name.

Decisions:
- Settings are grouped by concern: a field typed as a :class:`Group` (limits,
  ONNX, batching, events, feedback ...) holds that concern's settings, read in
  code as ``settings.onnx.intra_op_threads``. The environment stays flat: a
  group's variable is ``MMSEARCH_<group env_prefix><FIELD>`` (or the field's own
  ``env``), e.g. ``MMSEARCH_ONNX_INTRA_OP_THREADS``. A nested delimiter
  (``MMSEARCH_ONNX__INTRA_OP_THREADS``) would have renamed every variable a
  deployment already sets for no gain in clarity.
- :func:`variables` lists every variable of a class (its name, type, default,
  unit, whether it is advanced); the generated reference docs/configuration.md
  and the chart's cross-checks both read it, so no list is written twice.
- A renamed variable stays readable under its old name for a while
  (:class:`Deprecated`, on the class's ``deprecated``): the old value is used,
  converted to the new unit where the unit changed, with a warning naming both.
- ``advanced=True`` marks a tuning knob that the defaults serve well; the
  reference lists it apart.
"""
from __future__ import annotations

import json
import logging
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Iterator, TypeVar, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict
from pydantic_settings import SettingsError as SourceParseError

ENV_PREFIX = "MMSEARCH_"
log = logging.getLogger("mmsearch.settings")


class SettingsError(SystemExit):
    """A bad environment variable; the message names it and says what is expected."""


def setting(default: Any = ..., *, unit: str | None = None, advanced: bool = False, env: str | None = None,
            shown_default: str | None = None, **kwargs: Any) -> Any:
    """A settings field with the reference's metadata: ``unit`` (seconds, bytes ...), ``advanced`` (a tuning
    knob), ``env`` (the variable's name after the prefix, when it is not the group prefix + field name),
    ``shown_default`` (how the reference shows a default computed on the machine)."""
    extra = {key: value for key, value in (("unit", unit), ("advanced", advanced), ("env", env),
                                           ("shown_default", shown_default)) if value}
    if "default_factory" in kwargs:
        return Field(json_schema_extra=extra or None, **kwargs)
    return Field(default, json_schema_extra=extra or None, **kwargs)


class Group(BaseModel):
    """The settings of one concern inside a settings class; its variables are ``MMSEARCH_<env_prefix><FIELD>``."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    env_prefix: ClassVar[str] = ""


@dataclass(frozen=True)
class Deprecated:
    """An old variable name still read for the new one; ``convert`` turns its value into the new unit."""

    old: str
    new: str
    convert: Callable[[str], str] | None = None
    note: str = ""

    def message(self) -> str:
        unit = f" ({self.note})" if self.note else ""
        return f"{self.old} is deprecated: set {self.new}{unit} instead"


def ms_to_seconds(value: str) -> str:
    return repr(float(value) / 1000)


def us_to_seconds(value: str) -> str:
    return repr(float(value) / 1_000_000)


@dataclass(frozen=True)
class Variable:
    """One environment variable of a settings class."""

    name: str
    path: tuple[str, ...]
    field: FieldInfo
    group: type[Group] | None

    @property
    def extra(self) -> dict[str, Any]:
        extra = self.field.json_schema_extra
        return extra if isinstance(extra, dict) else {}


def _is_group(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, Group)


def variables(cls: type[BaseSettings]) -> Iterator[Variable]:
    """Every variable ``cls`` reads, group fields included, in declaration order."""
    prefix = cls.model_config.get("env_prefix", ENV_PREFIX)
    for name, field in cls.model_fields.items():
        if _is_group(field.annotation):
            group = field.annotation
            for sub, info in group.model_fields.items():
                extra = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
                yield Variable(f"{prefix}{extra.get('env') or group.env_prefix + sub}".upper(), (name, sub), info, group)
        else:
            extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
            yield Variable(f"{prefix}{extra.get('env') or name}".upper(), (name,), field, None)


def _complex(annotation: Any) -> bool:
    """Whether a variable holds JSON (a mapping or a list), as pydantic-settings decodes them."""
    kinds = [annotation, *get_args(annotation)] if get_origin(annotation) is not None else [annotation]
    return any(get_origin(kind) in (dict, list) or kind in (dict, list) for kind in kinds)


_warned: set[str] = set()


def _warn_once(message: str) -> None:
    if message not in _warned:
        _warned.add(message)
        log.warning(message)


def warn_deprecated(alias: Deprecated) -> None:
    """Log, once per process, that ``alias.old`` was read for ``alias.new``."""
    _warn_once(alias.message())


class FlatEnvSource(PydanticBaseSettingsSource):
    """Reads every variable of :func:`variables` from the environment, its deprecated aliases too."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False  # unused: __call__ reads every variable at once

    def __call__(self) -> dict[str, Any]:
        cls = self.settings_cls
        environ = dict(os.environ) if cls.model_config.get("case_sensitive") else {
            key.upper(): value for key, value in os.environ.items()}
        for alias in getattr(cls, "deprecated", ()):
            if alias.old not in environ:
                continue
            if alias.new in environ:
                _warn_once(f"{alias.message()}; both are set, {alias.new} is used")
                continue
            warn_deprecated(alias)
            try:
                environ[alias.new] = alias.convert(environ[alias.old]) if alias.convert else environ[alias.old]
            except ValueError:
                raise SettingsError(f"invalid environment variable {alias.old} (got {environ[alias.old]!r}): "
                                    f"not a number; better, set {alias.new}") from None
        values: dict[str, Any] = {}
        for var in variables(cls):
            if var.name not in environ:
                continue
            raw: Any = environ[var.name]
            if _complex(var.field.annotation):
                try:
                    raw = json.loads(raw)
                except ValueError as exc:
                    raise SettingsError(f"invalid environment variable {var.name}: not valid JSON ({exc})") from None
            target = values
            for part in var.path[:-1]:
                target = target.setdefault(part, {})
            target[var.path[-1]] = raw
        return values


class BaseConfig(BaseSettings):
    """Base for every settings class: ``MMSEARCH_`` prefix, unknown vars ignored, groups read flat."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", case_sensitive=False)
    deprecated: ClassVar[tuple[Deprecated, ...]] = ()

    @classmethod
    def settings_customise_sources(cls, settings_cls, init_settings, env_settings, dotenv_settings,
                                   file_secret_settings):
        return init_settings, FlatEnvSource(settings_cls)


S = TypeVar("S", bound=BaseConfig)


def _secret(annotation: Any) -> bool:
    return annotation in (SecretStr, SecretStr | None)


def describe_error(cls: type[BaseConfig], exc: ValidationError) -> str:
    """One line per bad field, naming its environment variable and the expectation."""
    by_path = {var.path: var for var in variables(cls)}
    lines = []
    for err in exc.errors():
        loc = tuple(str(p) for p in err.get("loc", ()))
        var = by_path.get(loc[:2]) or by_path.get(loc[:1])
        value = err.get("input")
        if var is None:  # a check across fields: its message names the variables
            lines.append(f"invalid settings of {cls.__name__}: {err.get('msg')}")
            continue
        shown = "" if isinstance(value, dict) or _secret(var.field.annotation) else f" (got {value!r})"  # never echo a secret
        lines.append(f"invalid environment variable {var.name}{shown}: {err.get('msg')}")
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
