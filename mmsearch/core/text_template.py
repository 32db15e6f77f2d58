"""What a text corpus embeds: a template over each record's fields.

The document tower of a text scene embeds, for every record, the text a
template makes of its fields: ``"{answer}"`` embeds one field (what
``encode --text-field answer`` means), ``"{question}: {answer}"`` several,
with the words between them. It is recorded with the vectors (``meta.json``)
and with the collection (its state's ``text_template``), so ``sync`` and any
later writer embed a changed document the way the build embedded the rest.

Decisions:
- One notion: a single field is the template of that field, so there is one
  thing to record and compare. Collections recorded before templates carry
  ``text_field``; :func:`recorded_template` reads either.
- Python's ``str.format`` syntax restricted to plain field names: ``{name}``
  and ``{{`` / ``}}`` for a literal brace; no positional fields, attribute or
  index access, conversions or format specs (a corpus record is flat JSON,
  and a template that cannot fail at render time except on a missing field
  is one whose failures can be named).
- A field's value is text or a number (written as Python writes it); a
  record without the field, or with null, a bool, a list or an object there,
  is refused naming the field: embedding ``None`` or ``[...]`` would index
  noise silently.
"""
from __future__ import annotations

import string
from typing import Any, Mapping

from mmsearch.core.errors import MmsearchError, shown

DEFAULT_FIELD = "question"
_FORBIDDEN_IN_NAME = set(".[]{}:!")


class TemplateError(MmsearchError):
    """A template that cannot be used, or a record it cannot be rendered from."""


class MissingField(TemplateError):
    """A record without text in a field the template names (``field``)."""

    def __init__(self, field: str, template: str):
        self.field = field
        super().__init__(f"no text in field {field!r}, which the text template {shown(template)} embeds")


def field_template(field: str) -> str:
    """The template that embeds ``field`` alone; TemplateError for a name a template cannot hold. Pure."""
    if not field or not field.strip() or _FORBIDDEN_IN_NAME & set(field):
        raise TemplateError(f"text field {shown(field)}: name one corpus field, without any of . [ ] {{ }} : ! "
                            "(to embed several fields, give a text template such as '{question}: {answer}')")
    return "{" + field + "}"


def template_fields(template: str) -> tuple[str, ...]:
    """The fields ``template`` names, in order, each once; TemplateError naming what is wrong. Pure."""
    where = f"text template {shown(template)}"
    if not isinstance(template, str) or not template.strip():
        raise TemplateError(f"{where}: empty; name the corpus fields to embed, e.g. '{{question}}: {{answer}}'")
    try:
        parts = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise TemplateError(f"{where}: {exc}; write a field as {{name}} and a literal brace as {{{{ or }}}}") from None
    fields: list[str] = []
    for _, name, spec, conversion in parts:
        if name is None:
            continue
        if not name or name.isdigit():
            raise TemplateError(f"{where}: a positional field {{{name}}}: name the corpus field, e.g. {{answer}}")
        if _FORBIDDEN_IN_NAME & set(name) or spec or conversion:
            raise TemplateError(f"{where}: {{{name}{'!' + conversion if conversion else ''}"
                                f"{':' + spec if spec else ''}}} is not a plain field: write {{name}} "
                                "(no attribute or index access, conversion or format spec)")
        if name not in fields:
            fields.append(name)
    if not fields:
        raise TemplateError(f"{where}: names no field, so every record would embed the same text; "
                            "name the corpus fields to embed, e.g. '{question}: {answer}'")
    return tuple(fields)


def render(template: str, record: Mapping[str, Any], fields: tuple[str, ...] | None = None) -> str:
    """The text ``template`` makes of ``record``; MissingField naming the first field without text.

    ``fields``: what :func:`template_fields` returned for ``template`` (computed when not given). Pure.
    """
    values = {}
    for name in fields if fields is not None else template_fields(template):
        value = record.get(name)
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise MissingField(name, template)
        values[name] = value if isinstance(value, str) else str(value)
    return template.format_map(values)


def choose_template(field: str | None, template: str | None, field_flag: str = "--text-field",
                    template_flag: str = "--text-template") -> str | None:
    """The template that ``field`` or ``template`` asks for (checked), None when neither is given;
    TemplateError when both are (naming the two flags). Pure."""
    if field and template:
        raise TemplateError(f"{field_flag} {shown(field)} and {template_flag} {shown(template)}: give one "
                            f"({field_flag} F is the template '{{F}}')")
    if template:
        template_fields(template)
        return template
    return field_template(field) if field else None


def recorded_template(state: Mapping[str, Any]) -> str | None:
    """The template a collection's state or a vectors ``meta.json`` records (``text_template``, or the
    ``text_field`` of those recorded before templates); None for image towers. Pure."""
    if state.get("text_template"):
        return str(state["text_template"])
    return field_template(str(state["text_field"])) if state.get("text_field") else None


def embedded_template(state: Mapping[str, Any]) -> str:
    """The template a text collection's vectors were made with: the one its state records, else the default
    field's (:data:`DEFAULT_FIELD`, encode's default). What a live write, a replay and ListScenes go by. Pure."""
    return recorded_template(state) or field_template(DEFAULT_FIELD)
