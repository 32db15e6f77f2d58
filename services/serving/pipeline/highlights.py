"""Highlights: where a text query met each hit's summary text (pure).

With ``SearchRequest.highlight`` a text query's items carry, per summary
field holding text, the spans that explain the match:

- a hit a full-text retriever found (``found_by`` has ``bm25``): kind
  ``terms``, every word of the field that matches a word of the query;
- a dense-only hit: kind ``sentence``, the one sentence of the item's text
  fields sharing the most distinct query words (the earliest on a tie), or
  nothing when no sentence shares one. Lexical overlap, not the text tower:
  ranking every sentence with the tower would cost an encode per sentence
  on the request's path, and a sentence the tower prefers without a shared
  word is not something a reader can check on the page.

Words are the BM25 analyser's in a cheap form: lower-cased ``\\w+`` tokens
(split further at ``_``, ``.`` and camel case, as push-milvus indexes
identifiers), the analyser's English stop words dropped, and a light
suffix-stripping stem (``files``/``filed``/``filing`` -> ``fil``) instead of
Snowball, so a query word meets its plural and past forms as BM25 does;
it can mark a word Snowball would not (or miss one it would).

Spans are ``[start, end)`` offsets in Unicode code points of the field's
text (the page indexes ``Array.from(text)``). At most ``MAX_SPANS`` spans per
field and ``MAX_CHARS`` characters of each field are looked at.
"""
from __future__ import annotations

import re
from typing import Iterable, Mapping, Sequence

from mmsearch.v1 import retrieval_pb2

MAX_SPANS = 64
MAX_CHARS = 20_000
# Lucene's English stop words (Milvus's ``english`` analyser drops these).
STOP_WORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their then there these they "
    "this to was will with".split())
_WORD = re.compile(r"\w+")
_PART = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|\d+|[^\W\d_A-Za-z]+")
_SENTENCE = re.compile(r"[^.!?\n]+(?:[.!?]+|$)", re.MULTILINE)
_SUFFIXES = (("ies", "ied", "es", "ed", "s"), ("ingly", "edly", "ing", "ly", "e", "y"))


def stem(word: str) -> str:
    """A light stem: lower case, then at most one plural or past suffix and one of -ing, -ly, -e, -y
    stripped, at least 3 letters kept (``strings`` -> ``str``, ``classes`` -> ``class``). Pure."""
    word = word.lower()
    for suffixes in _SUFFIXES:
        for suffix in suffixes:
            if word.endswith(suffix) and len(word) - len(suffix) >= 3 and not (suffix == "s" and word.endswith("ss")):
                word = word[:-len(suffix)]
                break
    return word


def words(text: str) -> Iterable[tuple[int, int, str]]:
    """(start, end, stem) of every word of ``text``, an identifier's parts included. Pure."""
    for match in _WORD.finditer(text):
        token, start = match.group(), match.start()
        parts = [(m.start(), m.end()) for m in _PART.finditer(token)]
        if len(parts) > 1:
            yield from ((start + a, start + b, stem(token[a:b])) for a, b in parts if token[a:b].lower() not in STOP_WORDS)
        if token.lower() not in STOP_WORDS:
            yield start, match.end(), stem(token)


def query_terms(query: str) -> frozenset[str]:
    """The stems of the query's words, stop words dropped. Pure."""
    return frozenset(s for _, _, s in words(query))


def term_spans(text: str, terms: frozenset[str]) -> list[tuple[int, int]]:
    """The spans of ``text``'s words whose stem is a query term, merged where they overlap. Pure."""
    spans: list[tuple[int, int]] = []
    for start, end, s in sorted(words(text[:MAX_CHARS])):
        if s not in terms:
            continue
        if spans and start <= spans[-1][1]:
            spans[-1] = (spans[-1][0], max(spans[-1][1], end))
        else:
            spans.append((start, end))
    return spans[:MAX_SPANS]


def best_sentence(texts: Mapping[str, str], terms: frozenset[str]) -> tuple[str, tuple[int, int]] | None:
    """(field, span) of the sentence sharing the most distinct query terms, first field and sentence on a
    tie; None when none shares one. Pure."""
    best: tuple[int, str, tuple[int, int]] | None = None
    for name, text in texts.items():
        for match in _SENTENCE.finditer(text[:MAX_CHARS]):
            shared = len({s for _, _, s in words(match.group())} & terms)
            if shared and (best is None or shared > best[0]):
                stripped = match.group().strip()
                start = match.start() + match.group().index(stripped[:1]) if stripped else match.start()
                best = (shared, name, (start, start + len(stripped)))
    return (best[1], best[2]) if best else None


def highlight(query: str, texts: Mapping[str, str], lexical: bool) -> list[tuple[str, str, list[tuple[int, int]]]]:
    """(field, kind, spans) for one hit's text ``fields`` (see module doc); ``lexical``: a full-text retriever
    found it. Pure."""
    terms = query_terms(query)
    if not terms:
        return []
    if lexical:
        out = [(name, "terms", term_spans(text, terms)) for name, text in texts.items()]
        return [h for h in out if h[2]]
    found = best_sentence(texts, terms)
    return [(found[0], "sentence", [found[1]])] if found else []


def mark(items: Sequence[retrieval_pb2.Item], query: str) -> None:
    """Add the highlights of ``query`` to each item, from its summary's text fields."""
    for item in items:
        texts = {name: value.string_value for name, value in item.summary.fields.items()
                 if value.WhichOneof("kind") == "string_value" and value.string_value}
        lexical = any(f.retriever == "bm25" for f in item.found_by)
        for name, kind, spans in highlight(query, texts, lexical):
            item.highlights.add(field=name, kind=kind, spans=[retrieval_pb2.Span(start=a, end=b) for a, b in spans])
