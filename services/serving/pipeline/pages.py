"""Pages of one search: the opaque page token and what each page fetches (pure).

A search's results are one list; a page is a slice of it. The token a page
returns for the next one carries the next offset, the concrete collection
that served the first page, the arm, the candidate pool, a digest of the
query and one of the user, under an HMAC (``MMSEARCH_PAGE_TOKEN_SECRET``;
unset, a random key of the process, with a warning: no token can be forged
out of the box). Serving checks all of it before anything reaches a store: a
token it did not issue (decoded strictly: one canonical text per token), one
sent with another query or user, or one carrying a value outside this
search's own bounds (an offset past ``MMSEARCH_MAX_PAGE_DEPTH``, a pool other
than the arm's candidates could make) is INVALID_ARGUMENT naming
``page_token``; one whose collection is no longer the one the name routes to
(a publish moved the alias) or whose arm changed (a config reload) is
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

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

from mmsearch.services.serving.outcomes.tokens import b64, process_key, unb64

TOKEN_VERSION = 2
MAC_BYTES = 16
MAX_TOKEN_CHARS = 1024  # a token is about 200 characters; anything longer is not one


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
    user: str = ""     # digest of the user id of the first page (:func:`query_digest`)


def signing_key(secret: str, *, warn: bool = True) -> bytes:
    """The HMAC key of ``MMSEARCH_PAGE_TOKEN_SECRET``; unset, a random key of this process (a warning)."""
    raw = process_key(secret, setting="MMSEARCH_PAGE_TOKEN_SECRET", warn=warn, consequence=(
        "page tokens are signed with a random key of this process, so a next page must come back to this "
        "replica (others refuse its tokens, and none survives a restart); set it from a Secret, the same on "
        "every replica"))
    return hashlib.sha256(b"mmsearch page token\x00" + raw).digest()


def _mac(key: bytes, payload: bytes) -> str:
    return b64(hmac.new(key, payload, hashlib.sha256).digest()[:MAC_BYTES])


def encode(token: PageToken, key: bytes) -> str:
    """The opaque text of ``token`` (URL-safe), signed with ``key`` (:func:`signing_key`). Pure."""
    payload = json.dumps([TOKEN_VERSION, token.offset, token.collection, token.arm, token.pool, token.query,
                          token.user], separators=(",", ":")).encode("utf-8")
    return f"{b64(payload)}.{_mac(key, payload)}"


def _count(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def decode(text: str, key: bytes) -> PageToken:
    """The token in ``text``; PageTokenError (``invalid``) unless this service issued it unchanged: the MAC is
    checked on the one canonical text of the payload before anything in it is read. Pure."""
    invalid = PageTokenError("invalid", "page_token is not a token this service issued (cut, changed or from "
                                        "another deployment or serving replica); search again without page_token")
    if not isinstance(text, str) or len(text) > MAX_TOKEN_CHARS or not text.isascii() or text.count(".") != 1:
        raise invalid
    body, _, mac = text.partition(".")
    try:
        payload = unb64(body)
        if not hmac.compare_digest(mac, _mac(key, payload)):
            raise invalid
        version, offset, collection, arm, pool, query, user = json.loads(payload)
    except (ValueError, TypeError):
        raise invalid from None
    if version != TOKEN_VERSION or not (_count(offset) and _count(pool)):
        raise invalid
    if not all(isinstance(v, str) for v in (collection, arm, query, user)):
        raise invalid
    return PageToken(offset, collection, arm, pool, query, user)


def query_digest(*parts: Any) -> str:
    """A short digest of the JSON of ``parts`` (scene, query, filter expression, diversify ...). Pure."""
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode("utf-8")).hexdigest()[:24]


def check(token: PageToken, *, query: str, user: str, collection: str, arm: str, max_depth: int,
          pool: tuple[int, int] = (0, 0)) -> None:
    """Raise PageTokenError unless ``token`` continues this query of this user on this collection and arm,
    within this search's bounds: ``pool`` is the (least, most) pool a pooled search makes ((0, 0) for
    prefix fetches; :func:`pool_bounds`), ``max_depth`` the deepest result. Pure."""
    if token.query != query:
        raise PageTokenError("invalid", "page_token belongs to another search: send the scene, query, filters, "
                                        "diversify and user of its first page (or no page_token)")
    if token.user != user:
        raise PageTokenError("invalid", "page_token was issued to another user: send the same user as for its "
                                        "first page (or no page_token)")
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
    least, most = pool
    if not least <= token.pool <= most or (most and token.offset >= token.pool):
        raise PageTokenError("invalid", f"page_token carries a pool of {token.pool} candidates at offset "
                                        f"{token.offset}, which this search never makes (its pool is "
                                        f"{least}..{most}): it was not issued for this search; search again "
                                        "without page_token")


def pool_bounds(*, pooled: bool, candidates: int, max_size: int) -> tuple[int, int]:
    """The (least, most) pool a first page makes (:func:`plan`: ``max(candidates, size)`` for a size up to
    ``max_size``); (0, 0) for prefix fetches. Pure."""
    return (candidates, max(candidates, max_size)) if pooled else (0, 0)


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
