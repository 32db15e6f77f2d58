"""What a collection holds besides its vectors: filterable fields and the BM25 text, declared once.

A :class:`FieldSpec` is one scalar field a search may filter (and, for
keyword and bool fields, count facets) on: its ``name`` in the collection
and in requests, its ``type`` and the corpus key push-milvus reads it from
(``source``, default the name). A :class:`LexicalSpec` names the corpus keys
whose text push-milvus concatenates into the collection's BM25 field.
:class:`CollectionLayout` is both together; it is recorded in the collection
record (:mod:`mmsearch.core.milvus.record`) and declared in the serving
experiment config, which activation checks against that record.

Decisions:
- Types: ``keyword`` (Milvus VARCHAR, at most :data:`KEYWORD_MAX_BYTES`
  UTF-8 bytes; eq / in / not), ``number`` (DOUBLE; eq / in / not / range) and
  ``bool`` (BOOL; eq / not). Every declared field gets Milvus's INVERTED
  scalar index (Milvus Lite 2.5.1 accepts it for all three; STL_SORT, TRIE
  and BITMAP it refuses).
- Milvus Lite 2.5.1 has no nullable fields, so a record without a keyword
  field gets ``""``; a record without a number or bool field fails the
  stage naming the record and field (a silent default would match filters
  it should not).
- BM25 text: the sources' values joined by newlines, each followed by the
  words of its identifiers (``csv.DictReader`` -> ``csv DictReader Dict
  Reader``, ``get_close_matches`` -> ``get close matches``): Milvus's
  standard tokenizer keeps dotted and underscored names as one token, so
  without the split a query word never meets a name's parts. Analyzer
  ``english`` by default (lower case, stop words, Snowball stemming).
"""
from __future__ import annotations

import json
import math
import re
from typing import Any, Iterable, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmsearch.core.errors import MmsearchError

FieldType = Literal["keyword", "number", "bool"]
OPERATORS: dict[str, tuple[str, ...]] = {"keyword": ("eq", "in", "not"), "number": ("eq", "in", "not", "range"),
                                         "bool": ("eq", "not")}
FACET_TYPES = ("keyword", "bool")
RESERVED = frozenset({"id", "vector", "content_sha256", "text", "sparse"})  # the collection's own fields
TEXT_FIELD, SPARSE_FIELD = "text", "sparse"
KEYWORD_MAX_BYTES = 1024
TEXT_MAX_BYTES = 65_535
ANALYZERS = ("english", "standard")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


class FieldError(MmsearchError, ValueError):
    """A field declaration, or a record's value for a declared field, that cannot be used."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FieldSpec(_Strict):
    """One filterable scalar field (see module doc)."""

    name: str = Field(description="Field name in the collection and in requests.")
    type: FieldType
    source: str | None = Field(None, min_length=1, description="Corpus key push-milvus reads; default: name.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError(f"field name {value!r}: letters, digits and _, starting with a letter or _")
        if value in RESERVED:
            raise ValueError(f"field name {value!r} is reserved (the collection's {sorted(RESERVED)})")
        return value

    @property
    def key(self) -> str:
        return self.source or self.name

    @property
    def operators(self) -> tuple[str, ...]:
        return OPERATORS[self.type]

    def value(self, record: Mapping[str, Any]) -> str | float | bool:
        """This field's value in ``record``, typed for Milvus; FieldError naming the record if unusable."""
        raw = record.get(self.key)
        where = f"record {record.get('id')}: field {self.name!r} (corpus key {self.key!r})"
        if self.type == "keyword":
            if raw is None:
                text = ""
            else:
                text = raw if isinstance(raw, str) else json.dumps(raw) if isinstance(raw, (list, dict)) else str(raw)
            if len(text.encode("utf-8")) > KEYWORD_MAX_BYTES:
                raise FieldError(f"{where}: {len(text.encode('utf-8'))} bytes; a keyword holds at most "
                                 f"{KEYWORD_MAX_BYTES}")
            return text
        if raw is None:
            raise FieldError(f"{where} is missing; every record needs a {self.type} (Milvus Lite has no null)")
        if self.type == "number":
            if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not math.isfinite(raw):
                raise FieldError(f"{where}: {raw!r} is not a finite number")
            return float(raw)
        if not isinstance(raw, bool):
            raise FieldError(f"{where}: {raw!r} is not true or false")
        return raw


class LexicalSpec(_Strict):
    """The BM25 text field: which corpus keys feed it, and Milvus's analyzer."""

    sources: tuple[str, ...] = Field(min_length=1, description="Corpus keys whose text is indexed for BM25.")
    analyzer: Literal["english", "standard"] = "english"

    def text(self, record: Mapping[str, Any]) -> str:
        """The record's BM25 text (see module doc), cut to fit Milvus's VARCHAR."""
        parts = []
        for key in self.sources:
            value = record.get(key)
            if value is None or value == "":
                continue
            value = str(value)
            words = identifier_words(value)
            parts.append(f"{value} {words}" if words else value)
        return fit_bytes("\n".join(parts), TEXT_MAX_BYTES)


def identifier_words(text: str) -> str:
    """The parts of every dotted, underscored or camel-case identifier in ``text``, space-separated. Pure."""
    out: list[str] = []
    for token in re.findall(r"[A-Za-z0-9_.]+", text):
        pieces = [p for p in re.split(r"[._]+", token) if p]
        split = [w for p in pieces for w in re.findall(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+", p)]
        if len(split) > 1 or len(pieces) > 1:
            out.extend(split)
    return " ".join(out)


def fit_bytes(text: str, limit: int) -> str:
    data = text.encode("utf-8")
    return text if len(data) <= limit else data[:limit].decode("utf-8", errors="ignore")


class CollectionLayout(_Strict):
    """The scalar fields and the optional BM25 text of a collection (recorded in its description)."""

    fields: tuple[FieldSpec, ...] = ()
    lexical: LexicalSpec | None = None

    @model_validator(mode="after")
    def _unique(self) -> "CollectionLayout":
        names = [f.name for f in self.fields]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"fields declared twice: {dupes}")
        return self

    @property
    def empty(self) -> bool:
        return not self.fields and self.lexical is None

    def field(self, name: str) -> FieldSpec | None:
        return next((f for f in self.fields if f.name == name), None)

    def record(self) -> dict:
        """The JSON form kept in the collection record."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_record(cls, fields: Any, lexical: Any) -> "CollectionLayout":
        """The layout a collection record holds (a record written before layouts: none)."""
        try:
            return cls(fields=tuple(fields or ()), lexical=lexical or None)
        except ValidationError as exc:
            raise FieldError(f"the collection record's fields are unreadable: {exc.errors()[0]['msg']}") from None


def parse_fields(text: str | None) -> tuple[FieldSpec, ...]:
    """``--fields``: ``name:type[:source],...`` (e.g. ``category:keyword,width:number``) or a JSON list of
    ``{name, type, source?}``; FieldError naming the entry at fault."""
    if not text or not text.strip():
        return ()
    text = text.strip()
    try:
        if text.startswith("["):
            try:
                items = json.loads(text)
            except ValueError as exc:
                raise FieldError(f"--fields {text!r}: not JSON ({exc})") from None
            return tuple(FieldSpec.model_validate(item) for item in items)
        specs = []
        for entry in (e.strip() for e in text.split(",")):
            parts = entry.split(":")
            if len(parts) not in (2, 3) or not all(parts):
                raise FieldError(f"--fields entry {entry!r}: expected name:type or name:type:source "
                                 f"(type keyword, number or bool), e.g. category:keyword")
            specs.append(FieldSpec(name=parts[0], type=parts[1], source=parts[2] if len(parts) == 3 else None))
        return tuple(specs)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise FieldError(f"--fields {text!r}: {'.'.join(str(p) for p in err['loc'])}: "
                         f"{err['msg'].removeprefix('Value error, ')}") from None


def parse_lexical(sources: str | Iterable[str] | None, analyzer: str = "english") -> LexicalSpec | None:
    """``--bm25-fields question,answer`` (+ ``--bm25-analyzer``) -> LexicalSpec, or None when empty."""
    if isinstance(sources, str):
        sources = [s.strip() for s in sources.split(",")]
    names = tuple(s for s in (sources or ()) if s)
    if not names:
        return None
    if analyzer not in ANALYZERS:
        raise FieldError(f"--bm25-analyzer {analyzer!r}: use one of {', '.join(ANALYZERS)}")
    return LexicalSpec(sources=names, analyzer=analyzer)
