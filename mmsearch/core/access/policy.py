"""The access decisions every entry point makes, as pure functions with one set of words.

- :func:`credential` reads the key a caller presents: ``Authorization: Bearer
  <key>`` or ``X-API-Key: <key>`` over HTTP, ``authorization`` metadata over
  gRPC.
- :func:`authenticate` turns it into a :class:`Principal`: a key of the key
  file, or the anonymous principal when there is no key and anonymous access
  is on (``search`` and ``feedback`` on the listed scenes only).
- :func:`authorize` checks a scope and a scene.

Each refusal is a :class:`Refusal` whose ``kind`` the adapters map to one
status (``unauthenticated`` -> 401 / UNAUTHENTICATED, ``forbidden`` -> 403 /
PERMISSION_DENIED, ``rate_limited`` -> 429 / RESOURCE_EXHAUSTED with
Retry-After) and whose message says what is missing and what to do. A
message names a key by its id, never by its secret; a presented key that is
not valid is not echoed at all.
"""
from __future__ import annotations

from dataclasses import dataclass

from mmsearch.core.access.keys import ApiKey, Principal, check_scenes, parse_token, verify
from mmsearch.core.access.ratelimit import RateLimiter

ANONYMOUS = "anonymous"
INVALID = "invalid"  # the key id audited for a presented key that is not valid (never the claimed one)
ANONYMOUS_SCOPES = frozenset({"search", "feedback"})
ALL_SCENES = "*"
HOW = "send `Authorization: Bearer <key>` or `X-API-Key: <key>` (gRPC: `authorization: Bearer <key>` metadata)"


@dataclass
class Refusal(Exception):
    kind: str  # unauthenticated | forbidden | rate_limited
    message: str
    retry_after: float | None = None

    def __str__(self) -> str:
        return self.message


def anonymous_principal(scenes: str) -> Principal | None:
    """The anonymous caller of a ``MMSEARCH_ANONYMOUS_SCENES`` value (``*``: every scene; empty: none); a name
    that is not a scene name raises ValueError. Pure."""
    names = [s.strip() for s in scenes.split(",") if s.strip()]
    if not names:
        return None
    return Principal(ANONYMOUS, ANONYMOUS_SCOPES, None if ALL_SCENES in names else check_scenes(names))


def credential(authorization: str | None, api_key: str | None = None) -> str | None:
    """The key a caller presents, or None for none; a malformed Authorization header is refused. Pure."""
    if authorization:
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            raise Refusal("unauthenticated", f"the authorization header must be `Bearer <key>`; {HOW}")
        return value.strip()
    return api_key.strip() if api_key and api_key.strip() else None


def authenticate(presented: str | None, keys: dict[str, ApiKey], anonymous: Principal | None) -> Principal:
    """The caller's principal (see the module doc); raises :class:`Refusal` ``unauthenticated``. Pure."""
    if presented is None:
        if anonymous is not None:
            return anonymous
        raise Refusal("unauthenticated", f"an API key is required: {HOW}")
    principal = verify(presented, keys)
    if principal is None:
        parsed = parse_token(presented)
        which = f" (key id {parsed[0]} is unknown or its secret does not match)" if parsed else ""
        raise Refusal("unauthenticated", f"the API key is not valid{which}; use a key from "
                                         "`mmsearch keys create` that is in the service's key file")
    return principal


def _who(principal: Principal) -> str:
    return "anonymous callers" if principal.key_id == ANONYMOUS else f"key {principal.key_id}"


def authorize(principal: Principal, scope: str, scene: str | None = None) -> None:
    """Raise :class:`Refusal` ``forbidden`` naming the missing scope or scene. Pure."""
    if not principal.may(scope):
        has = ", ".join(sorted(principal.scopes)) or "none"
        raise Refusal("forbidden", f"{_who(principal)} lack{'' if principal.key_id == ANONYMOUS else 's'} the "
                                   f"scope {scope!r} (has: {has}); use a key with scope {scope}")
    if scene is not None and not principal.may_touch(scene):
        allowed = ", ".join(sorted(principal.scenes or ())) or "none"
        raise Refusal("forbidden", f"{_who(principal)} may not touch scene {scene[:64]!r} (allowed scenes: "
                                   f"{allowed}); use a key whose scenes include it")


def limit_key(limiter: RateLimiter, principal: Principal) -> None:
    """Raise :class:`Refusal` ``rate_limited`` when ``principal`` is over its key's rate (no rate: no limit)."""
    if not principal.rate:
        return
    allowed, wait = limiter.allow(f"key:{principal.key_id}", principal.rate, principal.burst)
    if not allowed:
        raise Refusal("rate_limited", f"key {principal.key_id} is over its rate ({principal.rate:g}/s, "
                                      f"burst {principal.burst}); retry in {wait:.1f} s", wait)


def audited_key_id(authorization: str | None, api_key: str | None, keys: dict[str, ApiKey]) -> str:
    """The key id a refusal is audited under: the presented key's when it is valid, :data:`ANONYMOUS` for none,
    :data:`INVALID` otherwise, so a caller never chooses a label. Pure."""
    try:
        presented = credential(authorization, api_key)
    except Refusal:
        return INVALID
    if presented is None:
        return ANONYMOUS
    principal = verify(presented, keys)
    return principal.key_id if principal else INVALID
