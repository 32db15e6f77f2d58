"""Pages of one search: the opaque page token and what each page fetches (pure).

A search's results are one list; a page is a slice of it. The token a page
returns for the next one carries the next offset, the concrete collection
that served the first page, the arm, the candidate pool and a digest of the
query, under an HMAC (``MMSEARCH_PAGE_TOKEN_SECRET``). Serving checks all of
it: a token it did not issue, or one sent with another query, is
INVALID_ARGUMENT; one whose collection is no longer the one the name routes
to (a publish moved the alias) or whose arm changed (a config reload) is
FAILED_PRECONDITION, so a result list never mixes two index versions.

Stable, disjoint pages (no item twice, none skipped) with every ranker:

- Pooled searches (a ranker that re-ranks a pool, MMR; or fused retrievers)
  fetch the same pool for every page: ``pool`` is fixed by the first page
  (``max(match.candidates, page size)``, as a one-page search has always
  fetched) and carried in the token. The pool is ranked and sliced; the
  result list ends with the pool.
- Other searches (score order, score threshold) fetch the first
  ``offset + size + 1`` matches (the extra one says whether a next page
  exists), rank them and slice: a prefix of the exact similarity order is the
  same whatever its length, ties being ordered by id.
- Every registered ranker is prefix-consistent (its first n picks do not
  depend on how many it is asked for), so ranking ``offset + size`` and
  slicing equals ranking everything.
- ``MMSEARCH_MAX_PAGE_DEPTH`` bounds ``offset + size``: the last page stops
  there (no next token); a token beyond it is refused naming the setting.

The token is bound to the query, not the page size: a client may change
``page_size`` between pages.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

TOKEN_VERSION = 1
MAC_BYTES = 16


class PageTokenError(ValueError):
    """A page token that cannot be used; ``code`` is ``invalid`` (INVALID_ARGUMENT) or ``stale``
    (FAILED_PRECONDITION: the index or the experiment changed since the first page)."""

    def __init__(self, code: str, message: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class PageToken:
    offset: int        # position of the next page's first item
    collection: str    # the concrete collection that served the first page
    arm: str           # the arm label of the first page
    pool: int          # candidates fetched per page for pooled searches; 0: prefix fetches
    query: str         # digest of what defines the result list (:func:`query_digest`)


def _key(secret: str) -> bytes:
    return hashlib.sha256(b"mmsearch page token\x00" + secret.encode("utf-8")).digest()


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def encode(token: PageToken, secret: str) -> str:
    """The opaque text of ``token`` (URL-safe). Pure."""
    payload = json.dumps([TOKEN_VERSION, token.offset, token.collection, token.arm, token.pool, token.query],
                         separators=(",", ":")).encode("utf-8")
    mac = hmac.new(_key(secret), payload, hashlib.sha256).digest()[:MAC_BYTES]
    return f"{_b64(payload)}.{_b64(mac)}"


def decode(text: str, secret: str) -> PageToken:
    """The token in ``text``; PageTokenError (``invalid``) unless this service issued it unchanged. Pure."""
    invalid = PageTokenError("invalid", "page_token is not a token this service issued (cut, changed or from "
                                        "another deployment); search again without page_token")
    try:
        body, _, mac = text.partition(".")
        payload = _unb64(body)
        if not hmac.compare_digest(_unb64(mac), hmac.new(_key(secret), payload, hashlib.sha256).digest()[:MAC_BYTES]):
            raise invalid
        version, offset, collection, arm, pool, query = json.loads(payload)
    except (ValueError, TypeError, binascii.Error):
        raise invalid from None
    if version != TOKEN_VERSION or not all(isinstance(v, int) and v >= 0 for v in (offset, pool)):
        raise invalid
    return PageToken(offset, str(collection), str(arm), pool, str(query))


def query_digest(*parts: Any) -> str:
    """A short digest of the JSON of ``parts`` (scene, query, filter expression, diversify ...). Pure."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]


def check(token: PageToken, *, query: str, collection: str, arm: str, max_depth: int) -> None:
    """Raise PageTokenError unless ``token`` continues this query on this collection and arm. Pure."""
    if token.query != query:
        raise PageTokenError("invalid", "page_token belongs to another search: send the scene, query, filters, "
                                        "diversify and user of its first page (or no page_token)")
    if token.collection != collection:
        raise PageTokenError("stale", f"page_token: the index changed since the first page (it was served by "
                                      f"{token.collection}, the scene now searches {collection}); search again "
                                      "from the first page")
    if token.arm != arm:
        raise PageTokenError("stale", f"page_token: the experiment changed since the first page (arm {token.arm}, "
                                      f"now {arm}); search again from the first page")
    if token.offset >= max_depth:
        raise PageTokenError("invalid", f"page_token points past the deepest page: results stop at "
                                        f"{max_depth} (MMSEARCH_MAX_PAGE_DEPTH)")


@dataclass(frozen=True)
class PagePlan:
    offset: int        # first item of this page in the result list
    size: int          # items on this page (cut at the maximum depth)
    pool: int          # pooled searches: the pool; 0: prefix fetches
    fetch: int         # matches to fetch from each retriever
    facet_pool: int    # how many of the first matches facets count (0: no facets)


def plan(*, offset: int, size: int, pool: int, pooled: bool, candidates: int, facets: bool, exclude_one: bool,
         max_depth: int) -> PagePlan:
    """What this page fetches (see module doc); ``pool`` from the token, or 0 on the first page. Pure."""
    size = max(0, min(size, max_depth - offset))
    if pooled:
        pool = pool or max(candidates, size)
        fetch = pool
    else:
        pool = 0
        fetch = offset + size + 1
    facet_pool = candidates if facets else 0
    fetch = max(fetch, facet_pool) + (1 if exclude_one else 0)
    return PagePlan(offset, size, pool, fetch, facet_pool)
