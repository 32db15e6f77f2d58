"""Typed request filters -> one Milvus boolean expression (pure). Client text never becomes expression text.

A request's filters (``SearchRequest.filters``: field, op, typed values) are
checked against the scene's declared fields (:class:`mmsearch.core.fields.FieldSpec`)
by :func:`read_filters`, which raises :class:`FilterError` naming the filter
and its field for an unknown field, a value of the wrong type or an operator
the field's type does not allow. :func:`expression` compiles the checked
conditions: field names come from the declarations (never from the request),
numbers are formatted by Python, and keyword values are written as
double-quoted literals with ``\\`` and ``"`` escaped, which is all the
escaping Milvus's expression grammar (verified on Milvus Lite 2.5.1) does:
``x" or id > 0 or "`` matches only that literal text. The grammar has no way
to write a line break (``\\n`` is not decoded inside a literal), so values
with control characters are refused.

Semantics: all filters must hold (AND); ``in`` is one of the values, ``not``
none of them, ``range`` ``min <= field <= max`` with either bound optional.
Text is accepted for number and bool fields when it spells one (``"800"``,
``"true"``): URLs and the JSON API carry text.
"""
from __future__ import annotations

import math
import unicodedata
from dataclasses import dataclass
from typing import Mapping, Sequence

from mmsearch.core.errors import shown
from mmsearch.core.fields import KEYWORD_MAX_BYTES, FieldSpec
from mmsearch.v1 import retrieval_pb2

MAX_FILTERS = 16
MAX_VALUES = 100
OPS = {retrieval_pb2.Filter.EQ: "eq", retrieval_pb2.Filter.IN: "in", retrieval_pb2.Filter.RANGE: "range",
       retrieval_pb2.Filter.NOT: "not"}

Value = str | float | bool


class FilterError(ValueError):
    """A filter that cannot be applied; the message names it (``filters[i]``) and its field."""


@dataclass(frozen=True)
class Condition:
    """One checked filter: a declared field, an operator its type allows, typed values."""

    field: FieldSpec
    op: str                       # eq | in | not | range
    values: tuple[Value, ...] = ()
    low: float | None = None      # range bounds (inclusive)
    high: float | None = None


def _typed(spec: FieldSpec, value: retrieval_pb2.FilterValue, where: str) -> Value:
    kind = value.WhichOneof("kind")
    if kind is None:
        raise FilterError(f"{where}: a value is empty; set text, number or flag")
    given = getattr(value, kind)
    if spec.type == "keyword":
        if kind != "text":
            raise FilterError(f"{where}: {spec.name!r} is a keyword field; give text values, not {kind} {shown(given)}")
        if any(unicodedata.category(c) == "Cc" and c != "\t" for c in given):
            raise FilterError(f"{where}: values cannot hold line breaks or other control characters")
        if len(given.encode("utf-8")) > KEYWORD_MAX_BYTES:
            raise FilterError(f"{where}: a value is longer than {KEYWORD_MAX_BYTES} bytes")
        return given
    if spec.type == "number":
        if kind == "flag":
            raise FilterError(f"{where}: {spec.name!r} is a number field; give numbers, not flag {shown(given)}")
        try:
            number = float(given)
        except ValueError:
            raise FilterError(f"{where}: {spec.name!r} is a number field; {shown(given)} is not a number") from None
        if not math.isfinite(number):
            raise FilterError(f"{where}: {spec.name!r} takes finite numbers, not {shown(given)}")
        return number
    if kind == "flag":
        return given
    if kind == "text" and given.strip().lower() in ("true", "false"):
        return given.strip().lower() == "true"
    raise FilterError(f"{where}: {spec.name!r} is a bool field; give true or false, not {kind} {shown(given)}")


def read_filter(index: int, f: retrieval_pb2.Filter, fields: Mapping[str, FieldSpec]) -> Condition:
    where = f"filters[{index}] (field {shown(f.field)})"
    spec = fields.get(f.field)
    if spec is None:
        declared = sorted(fields) or "none"
        raise FilterError(f"{where}: the scene has no filterable field {shown(f.field)}; its fields: {declared}")
    op = OPS.get(f.op)
    if op is None:
        raise FilterError(f"{where}: give op EQ, IN, NOT or RANGE")
    if op not in spec.operators:
        raise FilterError(f"{where}: {op.upper()} does not apply to {spec.type} field {spec.name!r}; "
                          f"use {', '.join(o.upper() for o in spec.operators)}")
    if op == "range":
        if f.values:
            raise FilterError(f"{where}: RANGE takes min and/or max, not values")
        low = f.min if f.HasField("min") else None
        high = f.max if f.HasField("max") else None
        if low is None and high is None:
            raise FilterError(f"{where}: RANGE needs min, max or both")
        for bound in (low, high):
            if bound is not None and not math.isfinite(bound):
                raise FilterError(f"{where}: RANGE bounds must be finite numbers")
        if low is not None and high is not None and low > high:
            raise FilterError(f"{where}: RANGE min {low:g} is above max {high:g}")
        return Condition(spec, op, (), low, high)
    if f.HasField("min") or f.HasField("max"):
        raise FilterError(f"{where}: min and max belong to RANGE; {op.upper()} takes values")
    if not f.values:
        raise FilterError(f"{where}: {op.upper()} needs {'a value' if op == 'eq' else 'one or more values'}")
    if op == "eq" and len(f.values) != 1:
        raise FilterError(f"{where}: EQ takes exactly one value (got {len(f.values)}); use IN for several")
    if len(f.values) > MAX_VALUES:
        raise FilterError(f"{where}: at most {MAX_VALUES} values (got {len(f.values)})")
    values = tuple(dict.fromkeys(_typed(spec, v, where) for v in f.values))  # de-duplicated, order kept
    return Condition(spec, op, values)


def read_filters(filters: Sequence[retrieval_pb2.Filter], fields: Mapping[str, FieldSpec]) -> tuple[Condition, ...]:
    """The request's filters checked against the scene's declared ``fields``; FilterError for the first bad one."""
    if len(filters) > MAX_FILTERS:
        raise FilterError(f"filters: at most {MAX_FILTERS} (got {len(filters)})")
    return tuple(read_filter(i, f, fields) for i, f in enumerate(filters))


def literal(value: Value) -> str:
    """``value`` as a Milvus expression literal (see module doc). Pure."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return repr(value)
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def compile_condition(c: Condition) -> str:
    name = c.field.name
    if c.op == "eq":
        return f"{name} == {literal(c.values[0])}"
    if c.op == "range":
        parts = ([f"{name} >= {literal(c.low)}"] if c.low is not None else []) + \
                ([f"{name} <= {literal(c.high)}"] if c.high is not None else [])
        return " and ".join(parts)
    listed = ", ".join(literal(v) for v in c.values)
    return f"{name} {'in' if c.op == 'in' else 'not in'} [{listed}]"


def expression(conditions: Sequence[Condition]) -> str:
    """One Milvus expression for all ``conditions`` (AND); ``""`` for none. Pure."""
    return " and ".join(f"({compile_condition(c)})" for c in conditions)
