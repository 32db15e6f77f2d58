"""Checking the items of a write, each on its own: what is accepted becomes a record, what is not a refusal.

Pure functions: a refusal names the item (its position and id), the field
(``id``, ``fields.<name>``, ``fields``, ``image``, ``image_url``) and why,
and never stops the rest of the batch.

A document becomes a corpus record, the shape the offline jobs write
(``{"id": ..., **fields}``), so an item written online and the same item
built offline have the same hash, row and vector. An image scene's record
also carries ``url`` (when given one) and ``file_sha256``, the hash of the
image bytes (what ``prepare`` records), so new bytes are a changed document.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

from mmsearch.core.fields import CollectionLayout, FieldError
from mmsearch.core.text_template import MissingField, render, template_fields
from mmsearch.services.writer.fetch import FetchRefused, check_url

RESERVED_KEYS = ("_id",)
IMAGE_KEYS = ("url", "file_sha256")  # what an image record carries, set by the writer


@dataclass(frozen=True)
class Refusal:
    index: int
    id: int
    field: str
    reason: str


@dataclass
class Item:
    """An accepted document: its record (fields checked) and, for an image scene, its image source."""

    index: int
    id: int
    record: dict
    image: bytes = b""
    url: str = ""
    hash: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Rules:
    """What a scene accepts: its layout, the text template (text scenes) or an image tower, the limits."""

    layout: CollectionLayout
    template: str | None
    image: bool
    document_bytes: int
    image_bytes: int


def check_document(index: int, doc_id: int | None, fields: Mapping[str, Any], image: bytes, url: str,
                   rules: Rules) -> Item | Refusal:
    """One document of an upsert, checked (see the module doc). Pure."""
    ident = int(doc_id) if doc_id is not None else 0
    if doc_id is None:
        return Refusal(index, 0, "id", "missing: every document needs an integer id")

    def refuse(where: str, why: str) -> Refusal:
        return Refusal(index, ident, where, why)

    try:
        size = len(json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))
    except (TypeError, ValueError) as exc:
        return refuse("fields", f"not JSON ({exc})")
    if size > rules.document_bytes:
        return refuse("fields", f"{size} bytes, over the limit of {rules.document_bytes} (MMSEARCH_MAX_DOCUMENT_BYTES)")
    for key in RESERVED_KEYS + (IMAGE_KEYS if rules.image else ()):
        if key in fields:
            return refuse(f"fields.{key}", "set by the writer: leave it out")
    if "id" in fields and fields["id"] != ident:
        return refuse("fields.id", f"{fields['id']!r} differs from the document's id {ident}: leave it out")
    record = {**fields, "id": ident}
    for spec in rules.layout.fields:
        try:
            spec.value(record)
        except FieldError as exc:
            reason = str(exc).split(": ", 2)[-1] if ": " in str(exc) else str(exc)
            return refuse(f"fields.{spec.key}", f"{reason} (the collection declares {spec.name} a {spec.type})")
    if rules.image:
        if image and url:
            return refuse("image", "give the image bytes or image_url, not both")
        if not image and not url:
            return refuse("image", "missing: this scene embeds images; send the image bytes or an image_url")
        if len(image) > rules.image_bytes:
            return refuse("image", f"{len(image)} bytes, over the limit of {rules.image_bytes} "
                                   "(MMSEARCH_MAX_IMAGE_BYTES)")
        if url:
            try:
                check_url(url)
            except FetchRefused as exc:
                return refuse("image_url", str(exc))
        return Item(index, ident, record, image=image, url=url)
    if image or url:
        return refuse("image" if image else "image_url", "this scene embeds text, not images: send the text fields")
    try:
        render(rules.template or "", record, template_fields(rules.template or ""))
    except MissingField as exc:
        return refuse(f"fields.{exc.field}", str(exc))
    return Item(index, ident, record)


def with_image(item: Item, data: bytes) -> Item:
    """``item`` with its image bytes and their hash recorded (and its URL, when fetched from one). Pure."""
    record = {**item.record, "file_sha256": hashlib.sha256(data).hexdigest()}
    if item.url:
        record["url"] = item.url
    return Item(item.index, item.id, record, image=data, url=item.url)


def duplicates(ids: Sequence[int | None]) -> set[int]:
    """Positions whose id appeared earlier in the batch (refused: one write per id per batch). Pure."""
    seen: set[int] = set()
    out: set[int] = set()
    for position, ident in enumerate(ids):
        if ident is None:
            continue
        if ident in seen:
            out.add(position)
        seen.add(ident)
    return out
