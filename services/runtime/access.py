"""API keys at a gRPC server's door: who calls, may they, and not too fast (a server interceptor).

:class:`AccessInterceptor` wraps each unary method named in its ``rules``
(``/pkg.Service/Method`` -> :class:`Rule`: the scope it needs, and how to read
the scene from the request). Before the handler runs it authenticates the
``authorization`` metadata (:mod:`mmsearch.core.access.policy`), follows a
relayed caller, authorizes the scope and scene, and applies the key's rate.
Per-address limits are the web service's, the public door (serving is not
exposed outside the cluster). The caller's principal is then
in :data:`CALLER` for the handler. A method that is neither in ``rules`` nor in
``public`` (health, reflection) is refused: a new method is born protected.

Relaying: the web service calls serving with its own key (scope ``relay``)
and the caller's key id in ``x-mmsearch-caller`` (``anonymous`` for none),
the client's address in ``x-mmsearch-client``. Serving looks that id up in
its own key file and applies that key's scopes and scenes: it trusts no
identity a client asserts, only a relay key's word for a key it knows. Rate
limits are applied where the request entered (web), not again on relayed
calls.

Refusals: UNAUTHENTICATED, PERMISSION_DENIED, RESOURCE_EXHAUSTED with a
``retry-after`` trailing metadata (seconds), each with the policy's message,
each audited (:mod:`mmsearch.services.runtime.audit`).
"""
from __future__ import annotations

import inspect
import math
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Callable, Iterable

import grpc

from mmsearch.core.access.keyring import KeyRing
from mmsearch.core.access.keys import Principal
from mmsearch.core.access.policy import (ANONYMOUS, INVALID, Refusal, audited_key_id, authenticate, authorize, credential,
                                         limit_key)
from mmsearch.core.access.ratelimit import RateLimiter
from mmsearch.services.runtime.audit import audit

CALLER: ContextVar[Principal | None] = ContextVar("mmsearch_caller", default=None)
CALLER_HEADER = "x-mmsearch-caller"
CLIENT_HEADER = "x-mmsearch-client"
CODES = {"unauthenticated": grpc.StatusCode.UNAUTHENTICATED, "forbidden": grpc.StatusCode.PERMISSION_DENIED,
         "rate_limited": grpc.StatusCode.RESOURCE_EXHAUSTED}
PUBLIC = ("/grpc.health.v1.Health/", "/grpc.reflection.v1alpha.ServerReflection/",
          "/grpc.reflection.v1.ServerReflection/")


@dataclass(frozen=True)
class Rule:
    scope: str
    action: str
    scene_of: Callable[[object], str | None] | None = None


def peer_host(peer: str | None) -> str:
    """``ipv4:127.0.0.1:5000`` / ``ipv6:[::1]:5000`` -> the address alone. Pure."""
    if not peer:
        return "unknown"
    kind, _, rest = peer.partition(":")
    if kind == "ipv6":
        return rest.rpartition(":")[0].strip("[]") or rest
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    return peer[:64]


def relayed(principal: Principal, caller: str, keys, anonymous: Principal | None) -> Principal:
    """The principal a relay key calls for (see the module doc); raises :class:`Refusal`. Pure."""
    if not principal.may("relay"):
        raise Refusal("forbidden", f"{CALLER_HEADER} is honoured only from a key with scope 'relay' "
                                   f"(key {principal.key_id} has not); drop the header or use a relay key")
    if caller == ANONYMOUS:
        if anonymous is None:
            raise Refusal("unauthenticated", "the relayed caller is anonymous and anonymous access is off here "
                                             "(MMSEARCH_ANONYMOUS_SCENES)")
        return anonymous
    key = keys.get(caller)
    if key is None:
        raise Refusal("unauthenticated", f"the relayed caller key {caller[:12]!r} is not in this service's key "
                                         "file; give both services the same key file")
    return key.principal


class AccessInterceptor(grpc.aio.ServerInterceptor):
    """See the module doc."""

    def __init__(self, keyring: KeyRing, anonymous: Principal | None, rules: dict[str, Rule],
                 public: Iterable[str] = PUBLIC):
        self.keyring, self.anonymous, self.rules = keyring, anonymous, rules
        self.public = tuple(public)
        self.key_limiter = RateLimiter(1.0, 1)

    def admit(self, rule: Rule, request, metadata: dict[str, str]) -> tuple[Principal, bool]:
        """(principal, relayed) of a call, or :class:`Refusal`."""
        keys = self.keyring.keys()
        principal = authenticate(credential(metadata.get("authorization")), keys, self.anonymous)
        caller = metadata.get(CALLER_HEADER)
        is_relayed = caller is not None
        if is_relayed:
            principal = relayed(principal, caller, keys, self.anonymous)
        scene = rule.scene_of(request) if rule.scene_of else None
        authorize(principal, rule.scope, scene or None)
        if not is_relayed:
            limit_key(self.key_limiter, principal)
        return principal, is_relayed

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith(self.public):
            return handler
        rule = self.rules.get(method)
        if handler.unary_unary is None:
            return handler if rule is None else None  # every rule names a unary method
        inner = handler.unary_unary

        async def checked(request, context: grpc.aio.ServicerContext):
            metadata = {k.lower(): v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}
            peer = peer_host(context.peer())
            client = metadata.get(CLIENT_HEADER, peer)[:64]
            if rule is None:
                audit(method, "forbidden", INVALID, client=client, reason="no access rule")
                await context.abort(grpc.StatusCode.PERMISSION_DENIED,
                                    f"{method} has no access rule on this server; nobody may call it")
            try:
                principal, _ = self.admit(rule, request, metadata)
            except Refusal as refusal:
                key_id = self._claimed(metadata)
                scene = rule.scene_of(request) if rule.scene_of else None
                audit(rule.action, refusal.kind, key_id, scene=scene or None, client=client, reason=refusal.message)
                if refusal.retry_after is not None:
                    context.set_trailing_metadata((("retry-after", str(max(1, math.ceil(refusal.retry_after)))),))
                await context.abort(CODES[refusal.kind], refusal.message)
            token = CALLER.set(principal)
            try:
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result
            finally:
                CALLER.reset(token)

        return grpc.unary_unary_rpc_method_handler(checked, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)

    def _claimed(self, metadata: dict[str, str]) -> str:
        """The key id to audit a refusal under: a key of the file, ``anonymous``, or ``invalid``."""
        keys = self.keyring.keys()
        key_id = audited_key_id(metadata.get("authorization"), None, keys)
        caller = metadata.get(CALLER_HEADER)
        if key_id in (INVALID, ANONYMOUS) or not (caller in keys or caller == ANONYMOUS):
            return key_id
        return caller
