"""What calls return: plain frozen dataclasses read from the responses (pure).

Summary fields come back as Python values: a number that is a whole number
below 2**53 is an ``int`` (protobuf's ``Struct`` carries every number as a
double), lists and nested objects as lists and dicts.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from google.protobuf import struct_pb2

from mmsearch.client.errors import InvalidArgument
from mmsearch.client.filters import FieldRef
from mmsearch.v1 import retrieval_pb2


def _plain(value: struct_pb2.Value) -> Any:
    kind = value.WhichOneof("kind")
    if kind == "number_value":
        number = value.number_value
        return int(number) if number.is_integer() and abs(number) < 2**53 else number
    if kind == "struct_value":
        return {key: _plain(item) for key, item in value.struct_value.fields.items()}
    if kind == "list_value":
        return [_plain(item) for item in value.list_value.values]
    return None if kind in (None, "null_value") else getattr(value, kind)


@dataclass(frozen=True)
class Retrieval:
    retriever: str   # "dense" or "bm25"
    rank: int        # 1-based, in that retriever's own list
    score: float


@dataclass(frozen=True)
class Highlight:
    field: str                            # a summary field
    kind: str                             # "terms" (the query's words) or "sentence" (a dense-only hit's best)
    spans: tuple[tuple[int, int], ...]    # [start, end) in code points of the field's text


@dataclass(frozen=True)
class Hit:
    id: int
    score: float             # the ranking score (the order of hits)
    retrieval_score: float   # the matcher's (fused) score
    summary: dict[str, Any]
    found_by: tuple[Retrieval, ...] = ()
    folded: int = 0                                  # collapse: hits of the same value folded into this one
    highlights: tuple[Highlight, ...] = ()           # with highlight=True: where a text query matched


@dataclass(frozen=True)
class Facet:
    field: str
    counts: tuple[tuple[str, int], ...]  # (value, count), most frequent first
    candidates: int                      # how many matches were counted


@dataclass(frozen=True)
class SearchPage:
    """One page of results. ``next_page_token`` is empty on the last page; ``feedback_token`` is what
    :meth:`feedback` takes for a hit of this page (empty when serving records no impressions)."""

    hits: tuple[Hit, ...]
    arm: str
    assignments: dict[str, str]          # layer -> arm
    timings: dict[str, float]            # stage -> milliseconds
    next_page_token: str
    offset: int                          # position of hits[0] in the whole list
    facets: dict[str, Facet]
    collection: str                      # the index version that served the page
    impression_id: str
    feedback_token: str
    missing_summaries: int = 0
    cutoff: float | None = None          # the score threshold the arm applied (None: none)

    @classmethod
    def of(cls, response: retrieval_pb2.SearchResponse) -> "SearchPage":
        hits = tuple(Hit(item.id, item.score, item.retrieval_score,
                         {k: _plain(v) for k, v in item.summary.fields.items()},
                         tuple(Retrieval(r.retriever, r.rank, r.score) for r in item.found_by), item.folded,
                         tuple(Highlight(h.field, h.kind, tuple((s.start, s.end) for s in h.spans))
                               for h in item.highlights))
                     for item in response.items)
        facets = {f.field: Facet(f.field, tuple((c.value, c.count) for c in f.counts), f.candidates)
                  for f in response.facets}
        return cls(hits, response.arm, {a.layer: a.arm for a in response.assignments},
                   {t.stage: t.ms for t in response.timings}, response.next_page_token, response.offset, facets,
                   response.collection, response.impression_id, response.feedback_token, response.missing_summaries,
                   response.cutoff if response.HasField("cutoff") else None)


@dataclass(frozen=True)
class SceneField:
    name: str
    type: str                    # keyword, number or bool
    operators: tuple[str, ...]   # of eq, in, not, range
    facet: bool                  # facet counts available


@dataclass(frozen=True)
class SceneInfo:
    """A scene as ``ListScenes`` reports it; :meth:`field` builds filters checked against its fields."""

    name: str
    modality: str                # what the index holds: text or image
    image_query: bool            # accepts image queries
    layers: tuple[str, ...]
    collection: str              # the live index version
    version: str
    documents: int
    generation: int
    fields: dict[str, SceneField] = field(default_factory=dict)
    evaluation: dict[str, Any] | None = None   # the figures it was published on, if any
    collapse: str = ""           # the field a search collapses on when it names none ("video" for video frames)
    note: str = ""               # one line of plain text about the scene (e.g. that its image tower is untrained)
    text_fields: tuple[str, ...] = ()  # the fields whose text the live version embeds (a live write carries them)

    def field(self, name: str) -> FieldRef:
        """A filter builder on a declared field of this scene; an undeclared one is refused here."""
        spec = self.fields.get(name)
        if spec is None:
            raise InvalidArgument(f"scene {self.name!r} has no filterable field {name!r}; its fields: "
                                  f"{sorted(self.fields) or 'none'}", field="filters")
        return FieldRef(name, spec.type, spec.operators)

    @classmethod
    def of(cls, scene: retrieval_pb2.Scene) -> "SceneInfo":
        evaluation = None
        if scene.HasField("evaluation"):
            e = scene.evaluation
            evaluation = {"queries": e.queries, "k": e.k, "recall": e.recall, "mrr": e.mrr, "ndcg10": e.ndcg10,
                          "zero_hit": e.zero_hit, "p99_ms": e.p99_ms, "forced": e.forced,
                          "published_at": e.published_at}
        fields = {f.name: SceneField(f.name, f.type, tuple(f.operators), f.facet) for f in scene.fields}
        return cls(scene.name, scene.modality, scene.image_query, tuple(scene.layers), scene.collection,
                   scene.version, scene.documents, scene.generation, fields, evaluation, scene.collapse, scene.note,
                   tuple(scene.text_fields))


@dataclass(frozen=True)
class FeedbackResult:
    impression_id: str
    duplicate: bool   # this event was already recorded (counted once)
