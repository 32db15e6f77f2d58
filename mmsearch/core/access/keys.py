"""API keys: what one is, how it is written in the key file, minted and verified.

A key the caller presents is ``mms_<id>_<secret>``: ``id`` (12 hex characters)
names the key in logs, metrics and audit lines; ``secret`` (43 characters of
``secrets.token_urlsafe(32)``) is shown once, when the key is minted, and
stored only as its SHA-256 (a 256-bit random secret needs no slow hash: there
is nothing to guess). Verification looks the id up and compares digests with
:func:`hmac.compare_digest` (constant time; an unknown id is compared against
a dummy digest, so both take the same time).

The key file (a Kubernetes Secret mounted as a file) holds one JSON object a
line; blank lines and lines starting with ``#`` are ignored::

    {"id": "3f9a1c2b7d4e", "hash": "sha256:<64 hex>", "scopes": ["search"], "scenes": ["t2t"],
     "rate": 20, "burst": 40, "name": "mobile app"}

``scenes`` absent: every scene; ``rate`` (requests per second) absent: no
limit, ``burst`` defaults to ``max(1, 2 * rate)``. Several lines may hold the
same ``name`` (rotation: old and new key valid together until the old line is
removed); ids are unique.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
from dataclasses import dataclass

SCOPES = ("search", "feedback", "write", "admin", "relay")
"""``search`` (Search, ListScenes), ``feedback`` (Feedback), ``write`` (document writes), ``admin`` (reloads,
reports, anything operational), ``relay`` (a service key: may call on behalf of the caller it names, the web
service's key to serving)."""
PREFIX = "mms"
ID_CHARS = 12
_ID = re.compile(r"^[0-9a-f]{12}$")
_TOKEN = re.compile(r"^mms_([0-9a-f]{12})_([A-Za-z0-9_-]{32,128})$")
_HASH = re.compile(r"^sha256:[0-9a-f]{64}$")
_SCENE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")
_DUMMY = "sha256:" + "0" * 64
MAX_RATE = 100_000.0


class KeyFileError(ValueError):
    """A key file (or a key's definition) that cannot be used; the message names the line and the field."""


@dataclass(frozen=True)
class Principal:
    """Who a call is from: a key's id (``anonymous`` for no key), its scopes, scenes (None: all) and rate."""

    key_id: str
    scopes: frozenset[str]
    scenes: frozenset[str] | None = None
    rate: float | None = None
    burst: int | None = None
    name: str = ""

    def may(self, scope: str) -> bool:
        return scope in self.scopes

    def may_touch(self, scene: str) -> bool:
        return self.scenes is None or scene in self.scenes


@dataclass(frozen=True)
class ApiKey:
    principal: Principal
    digest: str  # "sha256:<hex>" of the secret part


def digest(secret: str) -> str:
    return "sha256:" + hashlib.sha256(secret.encode()).hexdigest()


def parse_token(token: str) -> tuple[str, str] | None:
    """(id, secret) of a presented key, or None when it is not shaped like one. Pure."""
    match = _TOKEN.match(token)
    return (match.group(1), match.group(2)) if match else None


def verify(token: str, keys: dict[str, ApiKey]) -> Principal | None:
    """The principal of a presented key when it is one of ``keys``, else None (constant-time compare)."""
    parsed = parse_token(token)
    if parsed is None:
        return None
    key_id, secret = parsed
    key = keys.get(key_id)
    ok = hmac.compare_digest(digest(secret), key.digest if key else _DUMMY)
    return key.principal if ok and key is not None else None


def check_scopes(scopes: list[str] | tuple[str, ...]) -> frozenset[str]:
    unknown = [s for s in scopes if s not in SCOPES]
    if unknown:
        raise KeyFileError(f"unknown scope {unknown[0]!r}; scopes are {', '.join(SCOPES)}")
    if not scopes:
        raise KeyFileError(f"a key needs at least one scope ({', '.join(SCOPES)})")
    return frozenset(scopes)


def check_scenes(scenes: list[str] | tuple[str, ...] | None) -> frozenset[str] | None:
    if scenes is None:
        return None
    bad = [s for s in scenes if not isinstance(s, str) or not _SCENE.match(s)]
    if bad:
        raise KeyFileError(f"scene {bad[0]!r} is not a scene name (letters, digits, '_', '.', '-'; at most 64)")
    if not scenes:
        raise KeyFileError("an empty scene list lets the key touch nothing; leave 'scenes' out for every scene")
    return frozenset(scenes)


def check_rate(rate: float | None, burst: int | None) -> tuple[float | None, int | None]:
    if rate is None:
        if burst is not None:
            raise KeyFileError("'burst' needs a 'rate' (requests per second)")
        return None, None
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 < rate <= MAX_RATE:
        raise KeyFileError(f"'rate' must be a number of requests per second in (0, {MAX_RATE:g}]; got {rate!r}")
    if burst is None:
        burst = max(1, int(2 * rate))
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10 * MAX_RATE:
        raise KeyFileError(f"'burst' must be a whole number of requests >= 1; got {burst!r}")
    return float(rate), burst


FIELDS = {"id", "hash", "scopes", "scenes", "rate", "burst", "name", "created"}


def parse_line(line: str) -> ApiKey:
    """One key of the key file (see the module doc); raises :class:`KeyFileError` naming the field. Pure."""
    try:
        raw = json.loads(line)
    except ValueError:
        raise KeyFileError("not a JSON object (one key a line, as `mmsearch keys create` prints it)") from None
    if not isinstance(raw, dict):
        raise KeyFileError("not a JSON object (one key a line, as `mmsearch keys create` prints it)")
    unknown = sorted(set(raw) - FIELDS)
    if unknown:
        raise KeyFileError(f"unknown field {unknown[0]!r}; a key has {', '.join(sorted(FIELDS))}")
    key_id, hashed = raw.get("id"), raw.get("hash")
    if not isinstance(key_id, str) or not _ID.match(key_id):
        raise KeyFileError(f"'id' must be {ID_CHARS} lowercase hex characters")
    if not isinstance(hashed, str) or not _HASH.match(hashed):
        raise KeyFileError(f"key {key_id}: 'hash' must be 'sha256:' and 64 hex characters (never the key itself)")
    scopes = raw.get("scopes")
    if not isinstance(scopes, list):
        raise KeyFileError(f"key {key_id}: 'scopes' must be a list, e.g. [\"search\"]")
    scenes = raw.get("scenes")
    if scenes is not None and not isinstance(scenes, list):
        raise KeyFileError(f"key {key_id}: 'scenes' must be a list of scene names, or absent for every scene")
    name = raw.get("name", "")
    if not isinstance(name, str) or len(name) > 200:
        raise KeyFileError(f"key {key_id}: 'name' must be text of at most 200 characters")
    try:
        rate, burst = check_rate(raw.get("rate"), raw.get("burst"))
        principal = Principal(key_id, check_scopes(scopes), check_scenes(scenes), rate, burst, name)
    except KeyFileError as exc:
        raise KeyFileError(f"key {key_id}: {exc}") from None
    return ApiKey(principal, hashed)


def parse_key_file(text: str, source: str = "the key file") -> dict[str, ApiKey]:
    """Every key of a key file by id; raises :class:`KeyFileError` naming ``source``, the line and the field."""
    keys: dict[str, ApiKey] = {}
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        try:
            key = parse_line(line)
        except KeyFileError as exc:
            raise KeyFileError(f"{source} line {number}: {exc}") from None
        if key.principal.key_id in keys:
            raise KeyFileError(f"{source} line {number}: key id {key.principal.key_id} appears twice; "
                               "mint a new key for a new line")
        keys[key.principal.key_id] = key
    return keys


def mint(scopes: list[str], scenes: list[str] | None = None, rate: float | None = None,
         burst: int | None = None, name: str = "", created: str = "") -> tuple[str, str]:
    """A new key: (the key to give the caller, shown once; the key file line holding only its hash)."""
    checked_scopes = sorted(check_scopes(scopes))
    checked_scenes = check_scenes(scenes)
    rate, burst = check_rate(rate, burst)
    key_id, secret = secrets.token_hex(ID_CHARS // 2), secrets.token_urlsafe(32)
    line: dict = {"id": key_id, "hash": digest(secret), "scopes": checked_scopes}
    if checked_scenes is not None:
        line["scenes"] = sorted(checked_scenes)
    if rate is not None:
        line.update(rate=rate, burst=burst)
    if name:
        line["name"] = name
    if created:
        line["created"] = created
    return f"{PREFIX}_{key_id}_{secret}", json.dumps(line, separators=(",", ":"))
