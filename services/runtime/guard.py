"""The request guard every service's server runs: no library text reaches a caller.

grpcio answers a request whose bytes do not parse as UNKNOWN, with the
protobuf exception's repr as the details (``Unexpected <class
'google.protobuf.message.DecodeError'>: ...``), and does the same for any
exception a handler lets out. :class:`RequestGuard` (a server interceptor,
unary calls) wraps each handler's request deserializer so that a request that
does not parse reaches the handler as a :class:`Malformed` marker, answered
INVALID_ARGUMENT naming the message type the method takes; an exception a
handler lets out is logged with its traceback and answered INTERNAL with a
plain message (the handlers map the failures they expect themselves).
"""
from __future__ import annotations

import inspect
import logging

import grpc

log = logging.getLogger(__name__)


class Malformed:
    """What the guarded deserializer returns for bytes that do not parse (the handler never sees it)."""

    __slots__ = ()


MALFORMED = Malformed()


def message_name(parse) -> str:
    """The full protobuf name of the message ``parse`` (a ``Message.FromString``) reads, or "the method's"."""
    owner = getattr(parse, "__self__", None)
    descriptor = getattr(owner, "DESCRIPTOR", None)
    return getattr(descriptor, "full_name", "") or "the method's request"


class RequestGuard(grpc.aio.ServerInterceptor):
    """See the module doc."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        parse, inner, method = handler.request_deserializer, handler.unary_unary, handler_call_details.method
        name = message_name(parse)

        def deserialize(raw: bytes):
            try:
                return parse(raw) if parse is not None else raw
            except Exception:  # noqa: BLE001 - any parse failure is the caller's bytes
                return MALFORMED

        async def guarded(request, context: grpc.aio.ServicerContext):
            if request is MALFORMED:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                    f"{method}: the request is not a valid {name} message; send a serialized "
                                    f"{name} (see the service's .proto)")
            try:
                result = inner(request, context)
                return await result if inspect.isawaitable(result) else result
            except (grpc.aio.AbortError, grpc.RpcError):
                raise
            except Exception:  # noqa: BLE001 - a bug in a handler: logged, never shown to the caller
                log.exception("a handler failed unexpectedly", extra={"method": method})
                await context.abort(grpc.StatusCode.INTERNAL,
                                    f"{method}: the service failed unexpectedly; see its log")

        return grpc.unary_unary_rpc_method_handler(guarded, request_deserializer=deserialize,
                                                   response_serializer=handler.response_serializer)
