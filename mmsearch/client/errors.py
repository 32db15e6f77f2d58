"""What a failed call raises: one exception class per gRPC status, carrying the server's own words.

Serving answers a caller's mistake with ``INVALID_ARGUMENT`` and a message that
starts with the stage and names the request field at fault (``request: top_k
500 is out of range ...``, ``request: filters[0]: the scene has no filterable
field ...``). :func:`error_of` keeps that message whole in ``message`` and the
field in ``field`` (``top_k``, ``filters[0]``, ``feedback_token`` ...), so a
program can point at what to fix. Refusals of the access rules carry
``retry_after`` (seconds) when the server said when to try again.

The client checks a few things itself before it calls (one query, typed filter
values, an operator the field allows); those raise :class:`InvalidArgument`
too, with ``field`` set and ``code`` ``INVALID_ARGUMENT``.
"""
from __future__ import annotations

import re

import grpc

from mmsearch.v1 import retrieval_pb2

# Every request field a message can blame, read from the contract itself.
_FIELDS = frozenset(f.name for message in (retrieval_pb2.SearchRequest, retrieval_pb2.FeedbackRequest,
                                           retrieval_pb2.Filter) for f in message.DESCRIPTOR.fields)
# Messages that name what is wrong in other words than the field's name.
_PHRASES = (("unknown scene", "scene"), ("give a query", "query"), ("no item with id", "similar_to"),
            ("does not accept image", "image"), ("does not accept text", "text"))
_LEADING = re.compile(r"^([a-z_]+)(\[\d+\])?")


class MmsearchError(Exception):
    """A call that failed. ``code``: the gRPC status name (``INVALID_ARGUMENT`` ...); ``message``: the
    server's message as it came; ``field``: the request field it blames, if any; ``retry_after``: seconds
    to wait before trying again, when the server said so."""

    code = "UNKNOWN"

    def __init_subclass__(cls, code: str = "", **kwargs):
        super().__init_subclass__(**kwargs)
        cls.code = code or cls.code

    def __init__(self, message: str, *, field: str | None = None, retry_after: float | None = None,
                 code: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field
        self.retry_after = retry_after
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        where = f" [{self.field}]" if self.field else ""
        return f"{self.code}{where}: {self.message}"


class InvalidArgument(MmsearchError, ValueError, code="INVALID_ARGUMENT"):
    """The request is wrong: ``field`` names what to fix."""


class NotFound(MmsearchError, code="NOT_FOUND"):
    """The request names something that does not exist (``similar_to`` an unknown item)."""


class PageExpired(MmsearchError, code="FAILED_PRECONDITION"):
    """A page token of an index version or experiment that changed since its first page: search again
    without it."""


class FailedPrecondition(MmsearchError, code="FAILED_PRECONDITION"):
    """The deployment does not fit the request (a model or collection missing): the operators' problem."""


class Unauthenticated(MmsearchError, code="UNAUTHENTICATED"):
    """No API key, or one that is not valid."""


class PermissionDenied(MmsearchError, code="PERMISSION_DENIED"):
    """The key lacks the scope or the scene; or a feedback token forged, altered or expired."""


class RateLimited(MmsearchError, code="RESOURCE_EXHAUSTED"):
    """Over the key's rate (or the per-client feedback limit): wait ``retry_after`` seconds."""


class Unavailable(MmsearchError, code="UNAVAILABLE"):
    """Serving, or a dependency behind it, cannot be reached (after the retries an idempotent call gets)."""


class DeadlineExceeded(MmsearchError, code="DEADLINE_EXCEEDED"):
    """No answer within the call's deadline."""


_CLASSES: dict[grpc.StatusCode, type[MmsearchError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgument, grpc.StatusCode.OUT_OF_RANGE: InvalidArgument,
    grpc.StatusCode.NOT_FOUND: NotFound, grpc.StatusCode.UNAUTHENTICATED: Unauthenticated,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDenied, grpc.StatusCode.RESOURCE_EXHAUSTED: RateLimited,
    grpc.StatusCode.UNAVAILABLE: Unavailable, grpc.StatusCode.DEADLINE_EXCEEDED: DeadlineExceeded,
}


def blamed_field(message: str) -> str | None:
    """The request field a server message names (pure): ``request: top_k 500 is out of range`` ->
    ``top_k``; ``request: filters[2]: ...`` -> ``filters[2]``; ``request: unknown scene 'x'`` -> ``scene``."""
    stage, sep, rest = message.partition(": ")
    text = rest if sep and " " not in stage else message
    for phrase, name in _PHRASES:
        if phrase in text:
            return name
    found = _LEADING.match(text)
    if found and found.group(1) in _FIELDS:
        return found.group(0)
    return None


def _retry_after(metadata) -> float | None:
    for key, value in metadata or ():
        if key == "retry-after":
            try:
                return float(value)
            except ValueError:
                return None
    return None


def error_of(exc: grpc.RpcError) -> MmsearchError:
    """The exception to raise for a failed call (see module doc)."""
    code = exc.code()
    message = exc.details() or code.name
    if code == grpc.StatusCode.FAILED_PRECONDITION:
        cls: type[MmsearchError] = PageExpired if message.startswith("request: ") else FailedPrecondition
    else:
        cls = _CLASSES.get(code, MmsearchError)
    field = blamed_field(message) if cls in (InvalidArgument, NotFound, PageExpired) else None
    error = cls(message, field=field, retry_after=_retry_after(exc.trailing_metadata()), code=code.name)
    return error
