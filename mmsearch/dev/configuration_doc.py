"""Generate docs/configuration.md, the reference of every ``MMSEARCH_*`` variable.

``python -m mmsearch.dev.configuration_doc`` (or ``make docs``) rewrites the
file; ``--check`` exits 1 when it is stale. Everything comes from the code:
the settings classes (their groups, types, defaults, units, the advanced flag
and the deprecated aliases, through :func:`mmsearch.core.settings.variables`)
and the Typer options of the job stages and of ``mmsearch experiments report``
(their ``envvar``: the first name is the variable, the others deprecated
aliases). Nothing is listed twice.
"""
from __future__ import annotations

import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import enum

import typer
from pydantic import SecretStr
from pydantic_core import PydanticUndefined

from mmsearch.core.artifacts import ArtifactSettings
from mmsearch.core.settings import BaseConfig, variables
from mmsearch.dev.demo_plan import DemoSettings
from mmsearch.jobs import options
from mmsearch.jobs.cli import job_app
from mmsearch.operator.main import OperatorSettings
from mmsearch.services.preprocess.settings import PreprocessSettings
from mmsearch.services.serving.config.settings import ServingSettings
from mmsearch.services.web.settings import WebSettings
from mmsearch.services.writer.settings import WriterSettings

OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"
COMMAND = "python -m mmsearch.dev.configuration_doc"

# (process, its settings classes): the artifact settings are read wherever artifacts are.
PROCESSES: tuple[tuple[str, str, tuple[type[BaseConfig], ...]], ...] = (
    ("preprocess", "`mmsearch serve preprocess`", (PreprocessSettings, ArtifactSettings)),
    ("serving", "`mmsearch serve serving`", (ServingSettings, ArtifactSettings)),
    ("writer", "`mmsearch serve writer`", (WriterSettings, ArtifactSettings)),
    ("web", "`mmsearch serve web`", (WebSettings,)),
    ("operator", "`mmsearch operator`", (OperatorSettings,)),
    ("demo", "`mmsearch demo`", (DemoSettings,)),
)
UNITS = {"_SECONDS": "seconds", "_DAYS": "days", "_BYTES": "bytes"}


def type_name(annotation: Any) -> str:
    if annotation is SecretStr:
        return "secret"
    origin = get_origin(annotation)
    if origin is Literal:
        return "one of " + ", ".join(f"`{a}`" for a in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        return " or ".join(type_name(a) for a in get_args(annotation) if a is not type(None))
    if origin is dict or annotation is dict:
        return "JSON object"
    if origin is list:
        return "JSON list"
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return "one of " + ", ".join(f"`{m.value}`" for m in annotation)
    return {str: "text", int: "integer", float: "number", bool: "boolean", Path: "path"}.get(annotation, str(annotation))


def shown(value: Any) -> str:
    if value is None or value == "":
        return "(empty)"
    if isinstance(value, SecretStr):
        return "(empty)" if not value.get_secret_value() else "(set)"
    if isinstance(value, bool):
        return str(value).lower()
    return f"`{value}`"


def cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def settings_rows(cls: type[BaseConfig]) -> list[tuple[str, ...]]:
    rows = []
    for var in variables(cls):
        extra = var.extra
        if "shown_default" in extra:
            default = extra["shown_default"]
        elif var.field.default is PydanticUndefined and var.field.default_factory is None:
            default = "required"
        else:
            default = shown(var.field.get_default(call_default_factory=True))
        group = var.path[0] if var.group is not None else ""
        description = (var.field.description or "") + (" *Advanced.*" if extra.get("advanced") else "")
        rows.append((f"`{var.name}`", group, type_name(var.field.annotation), cell(default),
                     extra.get("unit", ""), cell(description)))
    return rows


@dataclass
class OptionVariable:
    name: str
    kind: str
    aliases: tuple[str, ...]
    defaults: dict[str, str] = field(default_factory=dict)
    helps: dict[str, str] = field(default_factory=dict)

    def description(self) -> str:
        if len(set(self.helps.values())) <= 1:
            return next(iter(self.helps.values()), "")
        return "; ".join(f"{stage}: {text}" for stage, text in sorted(self.helps.items()))


def option_variables(commands: dict[str, Any]) -> dict[str, OptionVariable]:
    found: dict[str, OptionVariable] = {}
    for stage, command in sorted(commands.items()):
        for param in command.params:
            names = [param.envvar] if isinstance(param.envvar, str) else list(param.envvar or [])
            if not names:
                continue
            descriptor = param.type_descriptor() if callable(param.type_descriptor) else param.type_descriptor
            var = found.setdefault(names[0], OptionVariable(names[0], type_name(descriptor.annotation),
                                                            tuple(names[1:])))
            default = "required" if param.required else shown(param.default.value if isinstance(
                param.default, enum.Enum) else param.default)
            var.defaults[stage] = f"{'/'.join(param.opts)} {default}"
            var.helps[stage] = param.help or ""
    return found


def report_command() -> dict[str, Any]:
    """`mmsearch experiments report`'s options that read variables (declared in mmsearch.jobs.options)."""
    app = typer.Typer()

    @app.command()
    def report(mongo_uri: options.EventsMongoUri = "mongodb://127.0.0.1:27017",
               events_database: options.EventsDatabase = "mmsearch_events") -> None:  # pragma: no cover
        """Only its options matter here."""

    return {"experiments report": typer.main.get_command(app)}


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(row) + " |" for row in rows), ""]


def converted(old: str) -> str:
    return {"_MS": "milliseconds, converted to seconds", "_US": "microseconds, converted to seconds"}.get(
        old[-3:], "the same value")


def deprecated_rows() -> list[tuple[str, ...]]:
    rows = []
    for process, _, classes in PROCESSES:
        for cls in classes:
            for alias in cls.deprecated:
                rows.append((f"`{alias.old}`", f"`{alias.new}`", process, converted(alias.old)))
    jobs = option_variables(typer.main.get_command(job_app).commands)
    for var in jobs.values():
        for old in var.aliases:
            note = converted(old)
            rows.append((f"`{old}`", f"`{var.name}`", "jobs (" + ", ".join(sorted(var.defaults)) + ")", note))
    return rows


def render() -> str:
    jobs = option_variables(typer.main.get_command(job_app).commands)
    report = option_variables(report_command())
    counts = [(f"{process} ({command})", str(sum(len(list(variables(c))) for c in classes)),
               str(sum(1 for c in classes for v in variables(c) if v.extra.get("advanced"))))
              for process, command, classes in PROCESSES]
    counts.append(("jobs (`mmsearch job <stage>`)", str(len(jobs) + len(list(variables(ArtifactSettings)))), "0"))
    out = [
        "# Configuration reference",
        "",
        f"<!-- Generated by `{COMMAND}` (or `make docs`) from the settings classes and the job",
        "     options; do not edit by hand: tests/core/test_configuration_doc.py fails when it is stale. -->",
        "",
        "Every process reads its settings from `MMSEARCH_*` environment variables and stops at start-up",
        "with a message naming the variable when a value is wrong. Times are in seconds. Settings are",
        "grouped by concern (the *group* column: `settings.<group>.<field>` in the code); the variables",
        "stay flat. *Advanced* marks a tuning knob the defaults serve well.",
        "",
        "## Variables per process",
        "",
        *table(("process", "variables", "of which advanced"), counts),
    ]
    header = ("variable", "group", "type", "default", "unit", "description")
    for process, command, classes in PROCESSES:
        out += [f"## {process}", "", f"Read by {command}.", ""]
        for cls in classes:
            if cls is ArtifactSettings:
                out += ["Artifacts (S3 or a local folder), as every process that reads them:", ""]
            out += table(header, settings_rows(cls))
    out += ["## jobs", "",
            "Read by `mmsearch job <stage>`: every flag is also the variable named here (the flag wins);",
            "the artifact variables above (`MMSEARCH_S3_ENDPOINT_URL`, `MMSEARCH_CACHE_DIR`) too.", ""]
    rows = [(f"`{v.name}`", v.kind, cell("; ".join(f"{stage}: {d}" for stage, d in sorted(v.defaults.items()))),
             next((unit for suffix, unit in UNITS.items() if v.name.endswith(suffix)), ""), cell(v.description()))
            for v in sorted(jobs.values(), key=lambda v: v.name)]
    out += table(("variable", "type", "stages: flag default", "unit", "description"), rows)
    out += ["## experiments report", "", "Read by `mmsearch experiments report` (serving's names for its event store).", ""]
    rows = [(f"`{name}`", v.kind, cell("; ".join(v.defaults.values())), "", cell(v.description()))
            for v in report.values() for name in (v.name, *v.aliases)]
    out += table(("variable", "type", "flag default", "unit", "description"), rows)
    out += ["## Deprecated names", "",
            "Still read, with a warning naming the new variable; where the unit changed the value is converted.", ""]
    out += table(("old name", "new name", "process", "value"), deprecated_rows())
    return "\n".join(out).rstrip() + "\n"


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    text = render()
    if "--check" in args:
        if not OUTPUT.exists() or OUTPUT.read_text() != text:
            print(f"{OUTPUT} is stale: run `{COMMAND}` (or `make docs`)", file=sys.stderr)
            return 1
        return 0
    OUTPUT.write_text(text)
    print(f"wrote {OUTPUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
