"""After the ranker: collapse to one hit per value of a field, then sort by a field (pure).

A request may ask (``SearchRequest.sort``, ``collapse``; JSON ``sort=FIELD``,
``sort=-FIELD``, ``collapse=FIELD``) for its result list to be:

- **collapsed** on a keyword field: one hit per value, the first of the
  ranked order (the best), its ``folded`` counting the others; hits whose
  value is empty (a record without the field: Milvus Lite stores ``""``) are
  never folded together. A scene of video frames (it declares the keyword
  field ``video`` and the number field ``seconds``, as ``prepare
  --source-kind video`` writes them) collapses by ``video`` when the request
  names no field (:func:`default_collapse`): one hit per video, its best
  frame; ``collapse="-"`` (JSON ``collapse=-``) asks for every frame;
- **sorted** on a number field, ascending or descending (``-FIELD``); ties,
  and hits without a value (last either way), keep the ranked order.

Both work on one fixed list: the arm's candidate pool (``match.candidates``
matches after filters), ranked and cut by the arm's ranker (a score threshold,
``min_score`` a number or the index version's calibrated ``auto``) before
collapsing and sorting. So such a search is pooled
(:mod:`mmsearch.services.serving.pipeline.pages`): every page arranges the
same pool and slices it, which keeps pages disjoint and in the field's order,
and the list ends with the pool. Facets count the matches before collapsing.

:func:`read_arrangement` checks the request's fields against the scene's
declared ones; :func:`arrange` applies them.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from mmsearch.core.errors import shown
from mmsearch.core.fields import FieldSpec

SORT_TYPES = ("number",)
COLLAPSE_TYPES = ("keyword",)
NO_COLLAPSE = "-"  # a request's collapse that turns the scene's default collapse off (no field is named so)
# How the video source marks a frame: its video (keyword) and its time in the video (number, seconds).
VIDEO_FIELD, MOMENT_FIELD = "video", "seconds"


@dataclass(frozen=True)
class Arrangement:
    sort: str = ""            # a number field ("" : the ranked order)
    descending: bool = False
    collapse: str = ""        # a keyword field ("" : no collapse)

    @property
    def active(self) -> bool:
        return bool(self.sort or self.collapse)

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields whose values the matcher must return."""
        return tuple(name for name in (self.sort, self.collapse) if name)


def _field(parameter: str, name: str, fields: Mapping[str, FieldSpec], types: tuple[str, ...],
           or_else: str = "") -> str:
    spec = fields.get(name)
    if spec is None or spec.type not in types:
        allowed = sorted(n for n, f in fields.items() if f.type in types) or "none"
        why = f"is a {spec.type} field" if spec else "is not a field of the scene"
        raise ValueError(f"{parameter}: {shown(name)} {why}; {parameter} takes a {' or '.join(types)} field of the "
                         f"scene: {allowed}{or_else}")
    return name


def default_collapse(fields: Mapping[str, FieldSpec]) -> str:
    """The field a search of a scene with these declared ``fields`` collapses on when it names none: ``video``
    for a scene of video frames (``video`` a keyword field and ``seconds`` a number field), else "". Pure."""
    video, moment = fields.get(VIDEO_FIELD), fields.get(MOMENT_FIELD)
    frames = video is not None and video.type == "keyword" and moment is not None and moment.type == "number"
    return VIDEO_FIELD if frames else ""


def read_arrangement(sort: str, collapse: str, fields: Mapping[str, FieldSpec]) -> Arrangement:
    """The request's ``sort`` (``FIELD`` / ``-FIELD``) and ``collapse`` checked against the scene's declared
    ``fields``; ValueError naming the parameter, the field and the fields it may take. An empty ``collapse``
    is the scene's :func:`default_collapse`, :data:`NO_COLLAPSE` none. Pure."""
    descending = sort.startswith("-")
    name = sort[1:] if descending else sort
    if sort and not name:
        raise ValueError("sort: give a field name, FIELD (ascending) or -FIELD (descending)")
    if collapse == NO_COLLAPSE:
        folded = ""
    elif collapse:
        folded = _field("collapse", collapse, fields, COLLAPSE_TYPES, f" (or {NO_COLLAPSE!r} for no collapse)")
    else:
        folded = default_collapse(fields)
    return Arrangement(_field("sort", name, fields, SORT_TYPES) if name else "", descending, folded)


def collapse(order: Sequence[tuple[int, float]], values: Sequence[Any]) -> tuple[list[tuple[int, float]], dict[int, int]]:
    """The first hit of ``order`` per value (``values[position]``; empty values never fold), and how many
    each kept hit folded, by position. Pure."""
    kept: list[tuple[int, float]] = []
    first: dict[Any, int] = {}
    folded: dict[int, int] = {}
    for position, score in order:
        value = values[position] if position < len(values) else None
        if value is None or value == "":
            kept.append((position, score))
        elif value in first:
            folded[first[value]] = folded.get(first[value], 0) + 1
        else:
            first[value] = position
            kept.append((position, score))
    return kept, folded


def sort_by(order: Sequence[tuple[int, float]], values: Sequence[Any], descending: bool) -> list[tuple[int, float]]:
    """``order`` by ``values[position]`` (hits without a number last, ties in ``order``'s order). Pure."""
    def number(position: int) -> float | None:
        value = values[position] if position < len(values) else None
        return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None

    having = [(p, s) for p, s in order if number(p) is not None]
    lacking = [(p, s) for p, s in order if number(p) is None]
    having.sort(key=lambda hit: number(hit[0]), reverse=descending)  # stable: reverse keeps ties in order
    return having + lacking


def arrange(order: Sequence[tuple[int, float]], fields: Mapping[str, Sequence[Any]],
            how: Arrangement) -> tuple[list[tuple[int, float]], dict[int, int]]:
    """The ranked ``order`` (positions in the pool, scores) collapsed, then sorted, as ``how`` asks, with the
    folded counts by position; ``fields`` are the pool's values by field name. Pure."""
    out, folded = list(order), {}
    if how.collapse:
        out, folded = collapse(out, fields.get(how.collapse, []))
    if how.sort:
        out = sort_by(out, fields.get(how.sort, []), how.descending)
    return out, folded
