"""Feedback tokens: an HMAC-signed description of one result page, verified when feedback comes back.

A token is ``v1.<claims>.<ids>.<mac>``, each part base64url without padding:
``claims`` is compact JSON ``{"i": impression id, "s": scene, "a": [[layer,
arm], ...], "t": issued at (ms since the epoch)}``, ``ids`` the page's item ids
as little-endian int64 in rank order, and ``mac`` HMAC-SHA256 with the
feedback key over ``v1.<claims>.<ids>``. Feedback needs nothing but the token
to know the impression, its arms and the rank of the item clicked, so it
works even when the impression itself was dropped on its way to the store.

Decisions:
- Key: ``MMSEARCH_FEEDBACK_KEY`` (a Kubernetes Secret via the chart's
  ``feedback.existingSecret``), shared by every serving replica so any of them
  verifies a token another one signed. Unset, each process draws a random key
  and logs a warning: its tokens die with it and other replicas refuse them.
- Refusals (:class:`TokenError` carries the gRPC status): a token that does not
  parse -> INVALID_ARGUMENT; a wrong MAC (forged, altered, or signed with another
  key) -> PERMISSION_DENIED; older than the TTL, or issued more than
  :data:`CLOCK_SKEW_S` in the future -> PERMISSION_DENIED; an item that was not
  on the page -> INVALID_ARGUMENT naming the page's items. The MAC is compared
  in constant time and checked before anything in the claims is trusted.
- The user-id salt is ``MMSEARCH_USER_HASH_SALT`` when set, otherwise derived
  from the feedback key (HMAC of a fixed label), so one Secret is enough.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import secrets
import struct
from dataclasses import dataclass
from typing import Sequence

import grpc

log = logging.getLogger(__name__)

VERSION = "v1"
CLOCK_SKEW_S = 300.0
MAX_TOKEN_CHARS = 256 * 1024  # a page of 10,000 items (the largest MMSEARCH_MAX_TOP_K) is ~110 k
_SALT_LABEL = b"mmsearch user-id salt v1"
_COMPACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True)  # made once: json.dumps(**kw) builds one per call


class TokenError(ValueError):
    """A refused token or item: ``code`` the gRPC status, ``reason`` a metric label, the message says why."""

    def __init__(self, code: grpc.StatusCode, reason: str, message: str):
        super().__init__(message)
        self.code, self.reason = code, reason


@dataclass(frozen=True)
class Claims:
    impression_id: str
    scene: str
    assignments: tuple[tuple[str, str], ...]
    item_ids: tuple[int, ...]
    issued_ms: int

    def rank_of(self, item_id: int) -> int:
        """The 1-based rank of ``item_id`` on the page, or :class:`TokenError` (INVALID_ARGUMENT)."""
        try:
            return self.item_ids.index(int(item_id)) + 1
        except ValueError:
            shown = list(self.item_ids[:10]) + (["..."] if len(self.item_ids) > 10 else [])
            raise TokenError(grpc.StatusCode.INVALID_ARGUMENT, "not_on_page",
                             f"item_id {item_id} was not on the page of impression {self.impression_id} "
                             f"(its items are {shown}); send the id of an item that page showed") from None


def b64(data: bytes) -> str:
    """``data`` as base64url without padding: the one text form of every part of a token. Pure."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def unb64(text: str) -> bytes:
    """The bytes of ``text`` in its one canonical :func:`b64` form; ValueError for anything else (padding,
    other characters, changed unused bits: texts that decode to the same bytes are still altered tokens). Pure."""
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None
    if b64(data) != text:
        raise ValueError("not in canonical base64url")
    return data


def process_key(configured: str, *, setting: str, consequence: str, warn: bool = True) -> bytes:
    """The key ``configured`` (UTF-8), or when it is empty a random key of this process, logged as a warning
    that names ``setting`` and says the ``consequence``."""
    if configured:
        return configured.encode("utf-8")
    (log.warning if warn else log.debug)(f"{setting} is not set: {consequence}")
    return secrets.token_bytes(32)


class Signer:
    """Signs and verifies tokens with one key; also the salt of user-id hashes."""

    def __init__(self, key: bytes, ttl_s: float, user_salt: bytes | None = None):
        if len(key) < 16:
            raise ValueError("the feedback key must be at least 16 bytes")
        self._key = key
        self.ttl_s = ttl_s
        self.user_salt = user_salt or hmac.digest(key, _SALT_LABEL, "sha256")

    @classmethod
    def from_settings(cls, key: str, salt: str, ttl_s: float, *, warn: bool = True) -> "Signer":
        """The signer of ``MMSEARCH_FEEDBACK_KEY`` (a random key, with a warning, when it is empty)."""
        raw = process_key(key, setting="MMSEARCH_FEEDBACK_KEY", warn=warn, consequence=(
            "feedback tokens are signed with a random key of this process, so tokens die with it and other "
            "serving replicas refuse them as forged; set it from a Secret (the chart's feedback.existingSecret)"))
        return cls(raw, ttl_s, salt.encode("utf-8") if salt else None)

    def _mac(self, signed: str) -> bytes:
        return hmac.digest(self._key, signed.encode("ascii"), "sha256")

    def sign(self, impression_id: str, scene: str, assignments: Sequence[tuple[str, str]],
             item_ids: Sequence[int], issued_ms: int) -> str:
        claims = _COMPACT.encode({"i": impression_id, "s": scene, "a": assignments, "t": issued_ms})
        ids = struct.pack(f"<{len(item_ids)}q", *item_ids)
        signed = f"{VERSION}.{b64(claims.encode('ascii'))}.{b64(ids)}"
        return f"{signed}.{b64(self._mac(signed))}"

    def verify(self, token: str, now_ms: int) -> Claims:
        """The token's claims, or :class:`TokenError` saying why it is refused (see module doc)."""
        if not token:
            raise TokenError(grpc.StatusCode.INVALID_ARGUMENT, "malformed",
                             "feedback_token is empty; send the feedback_token of the search response")
        if len(token) > MAX_TOKEN_CHARS or not token.isascii():
            raise TokenError(grpc.StatusCode.INVALID_ARGUMENT, "malformed",
                             f"feedback_token is malformed ({len(token)} characters, at most {MAX_TOKEN_CHARS} ASCII "
                             "ones); send the feedback_token of the search response unchanged")
        parts = token.split(".")
        if len(parts) != 4 or parts[0] != VERSION:
            raise TokenError(grpc.StatusCode.INVALID_ARGUMENT, "malformed",
                             f"feedback_token is malformed (expected {VERSION}.<claims>.<ids>.<mac>); send the "
                             "feedback_token of the search response unchanged")
        signed = ".".join(parts[:3])
        # Compared as text, in its one canonical encoding: a changed padding bit of the last
        # base64 character decodes to the same bytes, but is still an altered token.
        if not hmac.compare_digest(parts[3], b64(self._mac(signed))):
            raise TokenError(grpc.StatusCode.PERMISSION_DENIED, "forged",
                             "feedback_token signature does not match: the token was forged or altered, or "
                             "signed with another MMSEARCH_FEEDBACK_KEY (all serving replicas must share one)")
        try:
            claims = json.loads(unb64(parts[1]))
            raw = unb64(parts[2])
            ids = struct.unpack(f"<{len(raw) // 8}q", raw[: len(raw) // 8 * 8])
            assignments = tuple((str(layer), str(arm)) for layer, arm in claims["a"])
            result = Claims(str(claims["i"]), str(claims["s"]), assignments, tuple(ids), int(claims["t"]))
        except (ValueError, KeyError, TypeError, binascii.Error) as exc:  # signed by us, so only a bug gets here
            raise TokenError(grpc.StatusCode.INVALID_ARGUMENT, "malformed",
                             f"feedback_token claims do not parse: {exc}") from None
        age_s = (now_ms - result.issued_ms) / 1000
        if age_s > self.ttl_s:
            raise TokenError(grpc.StatusCode.PERMISSION_DENIED, "expired",
                             f"feedback_token expired: issued {age_s:.0f} s ago, feedback is accepted for "
                             f"{self.ttl_s:.0f} s after a search (MMSEARCH_FEEDBACK_TTL_SECONDS)")
        if age_s < -CLOCK_SKEW_S:
            raise TokenError(grpc.StatusCode.PERMISSION_DENIED, "expired",
                             f"feedback_token was issued {-age_s:.0f} s in the future; check the serving clocks")
        return result
