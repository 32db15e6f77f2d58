"""API keys at the web service's door, and who serving is told the caller is.

:func:`gate` (a middleware) checks the routes of :data:`RULES`:
authenticates ``Authorization: Bearer <key>`` or ``X-API-Key`` against the
key file (:mod:`mmsearch.core.access`), authorizes the route's scope,
applies the key's rate and, on ``/api/feedback``, the per-client limit, and
puts the caller's :class:`Principal` on the request. Scenes are checked by
the handlers once the request is parsed (:func:`refuse_scene`). Refusals are
JSON errors with the policy's words (401 with ``WWW-Authenticate: Bearer``,
403, 429 with ``Retry-After``), each audited. Other routes (the page, static
files, health) are public.

The client address of per-client limits is the peer's, unless the peer is a
trusted proxy (``MMSEARCH_TRUSTED_PROXIES``): a client cannot evade a limit by
sending its own ``X-Forwarded-For``.

Calls to serving carry the web service's own key (``MMSEARCH_SERVING_KEY_FILE``,
scope ``relay``) and the caller's key id (:func:`relay_metadata`); serving
applies that key's scopes and scenes from its own key file.
"""
from __future__ import annotations

import math
from typing import Awaitable, Callable

from aiohttp import web

from mmsearch.core.access.keyring import KeyRing, SecretFile
from mmsearch.core.access.keys import Principal
from mmsearch.core.access.policy import (ANONYMOUS, Refusal, audited_key_id, authenticate, authorize, credential,
                                         limit_key)
from mmsearch.core.access.ratelimit import RateLimiter, client_address
from mmsearch.services.runtime.access import CALLER_HEADER, CLIENT_HEADER
from mmsearch.services.runtime.audit import audit
from mmsearch.services.web.settings import WebSettings

RULES = {"/api/search": ("search", "search"), "/api/similar": ("search", "search"),
         "/api/scenes": ("search", "scenes"), "/api/feedback": ("feedback", "feedback"),
         "GET /api/documents": ("search", "get"), "POST /api/documents": ("write", "upsert"),
         "DELETE /api/documents": ("write", "delete")}
"""Path (or "METHOD path" where methods differ) -> (scope, audit action)."""
STATUS = {"unauthenticated": 401, "forbidden": 403, "rate_limited": 429}
CALLER_KEY = web.RequestKey("caller", Principal)
CLIENT_KEY = web.RequestKey("client_address", str)


class Gate:
    """The keys, anonymous policy and limiters of one web application."""

    def __init__(self, settings: WebSettings):
        access = settings.access
        self.keyring = KeyRing(access.api_keys_file)
        self.anonymous = access.anonymous
        self.networks, self.header = settings.client.networks, settings.client.client_ip_header
        self.key_limiter = RateLimiter(1.0, 1)
        self.feedback_limiter = RateLimiter(settings.feedback.rate_per_second, settings.feedback.burst)
        self.relay_key = SecretFile(settings.serving_key_file, what="the key web presents to serving "
                                    "(MMSEARCH_SERVING_KEY_FILE)") if settings.serving_key_file else None

    def client(self, request: web.Request) -> str:
        return client_address(request.remote, request.headers.get(self.header), self.networks)

    def admit(self, request: web.Request, scope: str, client: str) -> Principal:
        """The caller's principal, or :class:`Refusal`."""
        headers = request.headers
        principal = authenticate(credential(headers.get("Authorization"), headers.get("X-API-Key")),
                                 self.keyring.keys(), self.anonymous)
        authorize(principal, scope)
        limit_key(self.key_limiter, principal)
        if scope == "feedback":
            allowed, wait = self.feedback_limiter.allow(client)
            if not allowed:
                limiter = self.feedback_limiter
                raise Refusal("rate_limited", f"too many feedback events from {client}: at most {limiter.rate:g}/s "
                                              f"(burst {limiter.burst}); retry in {wait:.1f} s", wait)
        return principal

    def claimed(self, request: web.Request) -> str:
        """The key id to audit a refusal under: a key of the file, ``anonymous`` or ``invalid`` (never the secret)."""
        return audited_key_id(request.headers.get("Authorization"), request.headers.get("X-API-Key"),
                              self.keyring.keys())

    def relay_metadata(self, request: web.Request) -> tuple[tuple[str, str], ...]:
        """The metadata of a call to serving on behalf of this request's caller (none without a relay key)."""
        if self.relay_key is None:
            return ()
        caller = request.get(CALLER_KEY)
        return (("authorization", f"Bearer {self.relay_key.value()}"),
                (CALLER_HEADER, caller.key_id if caller else ANONYMOUS),
                (CLIENT_HEADER, request.get(CLIENT_KEY, "unknown")))


GATE_KEY = web.AppKey("gate", Gate)
ErrorFn = Callable[[web.Request, int, str, str], web.Response]


def refusal_response(request: web.Request, refusal: Refusal, action: str, json_error: ErrorFn,
                     scene: str | None = None) -> web.Response:
    """The JSON error of a refusal, audited."""
    gate = request.app[GATE_KEY]
    audit(action, refusal.kind, gate.claimed(request), scene=scene, client=request.get(CLIENT_KEY),
          reason=refusal.message)
    response = json_error(request, STATUS[refusal.kind], refusal.kind, refusal.message)
    if refusal.kind == "unauthenticated":
        response.headers["WWW-Authenticate"] = 'Bearer realm="mmsearch"'
    if refusal.retry_after is not None:
        response.headers["Retry-After"] = str(max(1, math.ceil(refusal.retry_after)))
    return response


def gate_middleware(json_error: ErrorFn):
    @web.middleware
    async def gate(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        rule = RULES.get(f"{request.method} {request.path}") or RULES.get(request.path)
        if rule is None:
            return await handler(request)
        keeper = request.app[GATE_KEY]
        request[CLIENT_KEY] = keeper.client(request)
        try:
            request[CALLER_KEY] = keeper.admit(request, rule[0], request[CLIENT_KEY])
        except Refusal as refusal:
            return refusal_response(request, refusal, rule[1], json_error)
        return await handler(request)

    return gate


def refuse_scene(request: web.Request, scene: str, json_error: ErrorFn, scope: str = "search",
                 action: str = "search") -> web.Response | None:
    """A 403 when the caller may not use ``scope`` on ``scene`` (None when it may)."""
    caller = request.get(CALLER_KEY)
    if caller is None:
        return None
    try:
        authorize(caller, scope, scene)
    except Refusal as refusal:
        return refusal_response(request, refusal, action, json_error, scene=scene[:64])
    return None


def whoami(request: web.Request, json_error: ErrorFn) -> web.Response:
    """What the presented key (or an anonymous caller) may do: ``{key_id, scopes, scenes}`` (``scenes`` null: every
    scene). It describes only the key the request presents, never another; no key where anonymous access is off,
    or an unknown key, is 401."""
    gate = request.app[GATE_KEY]
    request[CLIENT_KEY] = gate.client(request)
    headers = request.headers
    try:
        principal = authenticate(credential(headers.get("Authorization"), headers.get("X-API-Key")),
                                 gate.keyring.keys(), gate.anonymous)
    except Refusal as refusal:
        return refusal_response(request, refusal, "whoami", json_error)
    return web.json_response({"key_id": principal.key_id, "scopes": sorted(principal.scopes),
                              "scenes": None if principal.scenes is None else sorted(principal.scenes)})
