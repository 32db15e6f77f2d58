"""Typed filter builders: conditions on a scene's declared fields, never a store expression.

``field("category").eq("json")``, ``field("category").any_of("json", "csv")``,
``field("category").none_of("os")``, ``field("width").between(800, None)``,
``field("animated").eq(False)``. Values keep their Python type on the wire
(``str`` -> text, ``bool`` -> flag, ``int``/``float`` -> number), so serving checks
them against the field's declared type.

A :class:`SceneInfo`'s ``field(name)`` gives the same builder bound to what
``ListScenes`` reports for that field (its type and operators): an operator
the field does not allow, or a value of the wrong type, is refused before any
call (:class:`~mmsearch.client.errors.InvalidArgument` naming the field).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

from mmsearch.client.errors import InvalidArgument
from mmsearch.v1 import retrieval_pb2

Value = Union[str, bool, int, float]
Filter = retrieval_pb2.Filter
"""What the builders make: the contract's typed ``Filter`` message, as ``SearchRequest.filters`` holds it."""
_OPS = {"eq": retrieval_pb2.Filter.EQ, "in": retrieval_pb2.Filter.IN, "not": retrieval_pb2.Filter.NOT,
        "range": retrieval_pb2.Filter.RANGE}
_TYPES = {"keyword": (str,), "number": (int, float), "bool": (bool,)}
MAX_VALUES = 100
"""Most values one filter may list (serving's bound)."""


def _value(value: Value) -> retrieval_pb2.FilterValue:
    if isinstance(value, bool):
        return retrieval_pb2.FilterValue(flag=value)
    if isinstance(value, (int, float)):
        return retrieval_pb2.FilterValue(number=float(value))
    return retrieval_pb2.FilterValue(text=value)


@dataclass(frozen=True)
class FieldRef:
    """Builds filters on one field; with ``type``/``operators`` (from ListScenes) it checks them first."""

    name: str
    type: str | None = None
    operators: tuple[str, ...] | None = None

    def eq(self, value: Value) -> Filter:
        """The field equals ``value``."""
        return self._make("eq", (value,))

    def any_of(self, *values: Value) -> Filter:
        """The field equals one of ``values`` (IN)."""
        return self._make("in", values)

    def none_of(self, *values: Value) -> Filter:
        """The field equals none of ``values`` (NOT)."""
        return self._make("not", values)

    def between(self, low: float | None = None, high: float | None = None) -> Filter:
        """``low`` <= field <= ``high`` (number fields; either end may be None, not both)."""
        for bound in (low, high):
            if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))
                                      or not math.isfinite(bound)):
                raise InvalidArgument(f"{self.name}: a range takes finite numbers, not {bound!r}", field=self.name)
        if low is None and high is None:
            raise InvalidArgument(f"{self.name}: give a range a low end, a high end or both", field=self.name)
        self._allowed("range")
        built = Filter(field=self.name, op=_OPS["range"])
        if low is not None:
            built.min = float(low)
        if high is not None:
            built.max = float(high)
        return built

    def _allowed(self, op: str) -> None:
        if self.operators is not None and op not in self.operators:
            raise InvalidArgument(f"{self.name}: a {self.type} field takes {', '.join(self.operators)}, not {op}",
                                  field=self.name)

    def _make(self, op: str, values: tuple[Value, ...]) -> Filter:
        if not values or len(values) > MAX_VALUES:
            raise InvalidArgument(f"{self.name}: give 1 to {MAX_VALUES} values (got {len(values)})", field=self.name)
        for value in values:
            if not isinstance(value, (str, bool, int, float)):
                raise InvalidArgument(f"{self.name}: values are str, bool, int or float, not "
                                      f"{type(value).__name__}", field=self.name)
            wanted = _TYPES.get(self.type or "")
            if wanted and (not isinstance(value, wanted) or (bool not in wanted and isinstance(value, bool))):
                raise InvalidArgument(f"{self.name}: a {self.type} field takes {wanted[0].__name__} values, not "
                                      f"{value!r}", field=self.name)
        self._allowed(op)
        return Filter(field=self.name, op=_OPS[op], values=[_value(v) for v in values])


def field(name: str) -> FieldRef:
    """A filter builder on the field ``name`` (unchecked: serving checks it against the scene)."""
    if not isinstance(name, str) or not name:
        raise InvalidArgument(f"a filter names a field: a non-empty string, not {name!r}", field="filters")
    return FieldRef(name)
