"""One document as every writer of a collection sees it: its content hash and its Milvus row.

A document is a flat JSON record with an integer ``id`` (a line of
``corpus.jsonl``, or an item an online write sends). Offline (push-milvus,
sync) and online (the writer service) build rows here, so a document written
either way gets the same row: :func:`document_hash` (the canonical JSON:
sorted keys, no whitespace) recorded beside the vector, so sync and the
writer tell new, changed and unchanged documents apart; :func:`row_of` the
row itself (the hash, every field the collection's layout declares, typed,
and the BM25 text); :func:`bounded_text` the cut every text gets before it is
tokenized, so a huge text costs what its first tokens cost.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Mapping

from mmsearch.core.fields import TEXT_FIELD, CollectionLayout
from mmsearch.core.milvus.names import HASH_FIELD

# The most characters of a text one token stands for: WordPiece makes a word longer than 100 characters
# one [UNK], BPE merges are much shorter. A text is cut to max_length times this before it is tokenized,
# so a 50 MB text costs what its first tokens cost; the tokenizer truncates to the same tokens either way
# (short of whitespace runs longer than this between words).
CHARS_PER_TOKEN = 100


def document_hash(record: Mapping[str, Any]) -> str:
    """Hex SHA-256 of ``record``'s canonical JSON (64 characters). Pure."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def row_of(record: Mapping[str, Any], vector: Any, layout: CollectionLayout) -> dict:
    """The Milvus row of ``record`` and its ``vector``: ``id``, ``vector``, the content hash, every field
    ``layout`` declares (typed) and the BM25 text. Raises :class:`mmsearch.core.fields.FieldError` naming
    the record and field a declared value cannot fill. Pure."""
    row: dict[str, Any] = {"id": int(record["id"]), "vector": vector, HASH_FIELD: document_hash(record)}
    for spec in layout.fields:
        row[spec.name] = spec.value(record)
    if layout.lexical is not None:
        row[TEXT_FIELD] = layout.lexical.text(record)
    return row


def bounded_text(text: str, max_length: int | None, side: str = "right") -> str:
    """``text`` cut to ``max_length * CHARS_PER_TOKEN`` characters, keeping the side truncation keeps. Pure."""
    if max_length is None or len(text) <= max_length * CHARS_PER_TOKEN:
        return text
    bound = max_length * CHARS_PER_TOKEN
    return text[-bound:] if side == "left" else text[:bound]


def whole_numbers(value: Any) -> Any:
    """``value`` with integral floats as ints: a protobuf ``Struct`` carries every number as a double, and a JSON
    corpus record keeps ``3`` an int, so a document written online hashes and embeds as the same record built
    offline (and reads back as it was written). Pure."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2 ** 53:
        return int(value)
    if isinstance(value, dict):
        return {k: whole_numbers(v) for k, v in value.items()}
    if isinstance(value, list):
        return [whole_numbers(v) for v in value]
    return value
