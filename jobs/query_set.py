"""The labelled query set ``mmsearch job evaluate`` reads (the format: :mod:`mmsearch.jobs.evaluate`).

:func:`parse_query_set` checks each line (one query, its labels, within the
request limits serving applies to the same query: a text of at most
``MMSEARCH_MAX_QUERY_CHARS`` characters, an image of at most
``MMSEARCH_MAX_IMAGE_BYTES``); :func:`resolve_labels` turns field-value labels
into document ids through the corpus.

A label that names no document of the corpus can never be found: a query set
whose labels name a field no corpus record has, or whose labels all name
nothing, is refused (its recall would read 0.000 and measure nothing); one
with only some such labels is measured, counts them as misses, says so on
stderr and records how many in the summary (``unresolved``), and the quality
gate refuses to judge it (:func:`mmsearch.core.quality.shortfalls`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable

from mmsearch.core import artifacts
from mmsearch.core.limits import RequestLimits
from mmsearch.core.settings import BaseConfig, load_settings, setting
from mmsearch.jobs.encode import fetch
from mmsearch.jobs.errors import JobError
from mmsearch.jobs.jsonl import json_objects


class _Limits(BaseConfig):
    limits: RequestLimits = setting(default_factory=RequestLimits)


def request_limits() -> RequestLimits:
    """The request limits as serving reads them (``MMSEARCH_MAX_...`` variables, else their defaults)."""
    return load_settings(_Limits).limits


@dataclass(frozen=True)
class Label:
    """One relevant answer: the ids of the documents that count as finding it (empty: unresolved)."""

    name: str                 # "id 42" or "question=str.split"
    ids: frozenset[int]


@dataclass(frozen=True)
class LabelledQuery:
    line: int
    kind: str                 # "text" | "image"
    text: str                 # the text, or the image reference as written
    labels: tuple[Label, ...]
    image: bytes = b""


def _values(value: Any) -> list:
    return list(value) if isinstance(value, list) else [value]


def parse_query_set(data: bytes, source: str, limits: RequestLimits | None = None) -> list[dict]:
    """The query set's objects (checked: a query, labels, the limits); JobError naming the line otherwise."""
    limits = limits or RequestLimits()
    out = []
    for number, row in json_objects(data, source):
        where = f"{source} line {number}"
        kinds = [k for k in ("query", "image") if k in row]
        if len(kinds) != 1 or not isinstance(row[kinds[0]], str) or not row[kinds[0]].strip():
            raise JobError(f"{where}: give exactly one of 'query' (a text) or 'image' (a file), non-empty")
        if "query" in row and len(row["query"]) > limits.query_chars:
            raise JobError(f"{where}: the query is {len(row['query'])} characters, over the "
                           f"{limits.query_chars} serving accepts (MMSEARCH_MAX_QUERY_CHARS): shorten it")
        ids, relevant = row.get("relevant_ids", []), row.get("relevant", {})
        if not isinstance(ids, list) or not all(isinstance(i, int) and not isinstance(i, bool) for i in ids):
            raise JobError(f"{where}: 'relevant_ids' must be a list of integer ids")
        if not isinstance(relevant, dict) or not all(isinstance(k, str) for k in relevant):
            raise JobError(f"{where}: 'relevant' must map a corpus field to a value or a list of values")
        if not ids and not any(_values(v) for v in relevant.values()):
            raise JobError(f"{where}: no relevant documents: give 'relevant_ids' or 'relevant'")
        out.append({**row, "_line": number})
    if not out:
        raise JobError(f"{source}: no queries")
    return out


def _field_index(fields: list[str], records: Iterable[dict] | None, source: str) -> dict[str, dict[str, set[int]]]:
    """{field: {value as text: ids}} over the corpus; JobError for a field no record has."""
    index: dict[str, dict[str, set[int]]] = {f: {} for f in fields}
    if not fields:
        return index
    if records is None:
        raise JobError(f"{source} names relevant documents by field ({', '.join(fields)}): give --workdir "
                       "with the corpus.jsonl those documents come from")
    keys: set[str] = set()
    for record in records:
        keys.update(record)
        for f in fields:
            if f in record:
                index[f].setdefault(str(record[f]), set()).add(record["id"])
    absent = [f for f in fields if not index[f]]
    if absent:
        raise JobError(f"{source}: 'relevant' names the field {absent[0]!r}, which no corpus record has "
                       f"(the corpus's fields: {', '.join(sorted(keys))}): fix the query set")
    return index


def resolve_labels(rows: list[dict], records: Iterable[dict] | None, source: str,
                   limits: RequestLimits | None = None) -> list[LabelledQuery]:
    """Field-value labels -> document ids through the corpus ``records`` (None: no corpus given); ids are
    checked against the corpus too when there is one. JobError when no label names a document."""
    limits = limits or RequestLimits()
    fields = sorted({f for row in rows for f in row.get("relevant", {})})
    records = list(records) if records is not None else None
    index = _field_index(fields, records, source)
    known = {r["id"] for r in records} if records is not None else None
    queries = []
    base = source.rsplit("/", 1)[0] if "/" in source else "."
    for row in rows:
        labels = [Label(f"id {i}", frozenset([i]) if known is None or i in known else frozenset())
                  for i in row.get("relevant_ids", [])]
        for f, value in sorted(row.get("relevant", {}).items()):
            labels += [Label(f"{f}={v}", frozenset(index[f].get(str(v), ()))) for v in _values(value)]
        if "query" in row:
            queries.append(LabelledQuery(row["_line"], "text", row["query"], tuple(labels)))
        else:
            queries.append(LabelledQuery(row["_line"], "image", row["image"], tuple(labels),
                                         _image(row, base, source, limits)))
    if not any(label.ids for query in queries for label in query.labels):
        raise JobError(f"{source}: no label names a document of the corpus (every relevant id and field value "
                       "is unknown to it): the recall would be 0 and measure nothing; is it the query set of "
                       "this corpus?")
    return queries


def _image(row: dict, base: str, source: str, limits: RequestLimits) -> bytes:
    ref = row["image"]
    uri = ref if "://" in ref or ref.startswith("/") else f"{base}/{ref}"
    try:
        data = fetch(uri) if uri.startswith(("http://", "https://")) else artifacts.read_bytes(uri)
    except (OSError, artifacts.ArtifactError) as exc:
        raise JobError(f"{source} line {row['_line']}: cannot read image {ref!r}: {exc}") from None
    if len(data) > limits.image_bytes:
        raise JobError(f"{source} line {row['_line']}: image {ref!r} is {len(data)} bytes, over the "
                       f"{limits.image_bytes} serving accepts (MMSEARCH_MAX_IMAGE_BYTES): use a smaller image")
    return data


def unresolved(queries: Iterable[LabelledQuery]) -> list[str]:
    """The names of the labels that name no document, sorted (each once). Pure."""
    return sorted({label.name for query in queries for label in query.labels if not label.ids})
