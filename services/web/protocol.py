"""Requests refused before they reach the application: a request line or header over the limit, or no HTTP.

aiohttp's HTTP parser refuses those before any route or middleware runs, and
its own answer is a plain-text 400 that echoes the start of the line, with an
ERROR traceback in the log holding it too. :class:`WebRunner` serves the
application with connections that answer them in the API's JSON error shape
(:func:`mmsearch.services.web.responses.error_body`, with a request id and the
security headers) and log one warning line without the refused line.

The limits are sized to the request limits (:func:`max_request_line_bytes`):
any URL whose parameters are within them fits, whatever the script of its
query, so only a request no client of the API would build is refused.
"""
from __future__ import annotations

import logging
import uuid

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError, LineTooLong
from aiohttp.web_protocol import RequestHandler

from mmsearch.core.limits import RequestLimits
from mmsearch.services.web.params import MAX_TOKEN_CHARS
from mmsearch.services.web.responses import SECURITY_HEADERS, error_body

log = logging.getLogger(__name__)

PERCENT_ENCODED_CHAR_BYTES = 12
"""Most bytes one character of a parameter takes in a URL: a 4-byte UTF-8 character as %XX%XX%XX%XX."""
OTHER_PARAMETER_BYTES = 8 * 1024
"""Room for the method, path, version and the short parameters (scene, k, diversify, filters, facets, id):
aiohttp's own default line limit."""


def max_request_line_bytes(limits: RequestLimits) -> int:
    """Longest request line (and header field) accepted: a query of ``limits.query_chars`` and a user of
    ``limits.user_id_chars`` characters in any script, a page token, and the other parameters (pure)."""
    return (PERCENT_ENCODED_CHAR_BYTES * (limits.query_chars + limits.user_id_chars) + MAX_TOKEN_CHARS
            + OTHER_PARAMETER_BYTES)


def refusal(exc: HttpProcessingError, limit: int) -> tuple[str, str]:
    """The error code and message of a request the parser refused (pure; never quotes the request)."""
    if isinstance(exc, LineTooLong):
        return "request_too_long", (f"the request line or a header is over the limit of {limit} bytes: a query has "
                                    "at most the documented number of characters (see the API reference)")
    return "bad_request", f"the request is not well-formed HTTP ({type(exc).__name__})"


class JsonRefusals(RequestHandler):
    """A connection that answers requests its parser refused in the API's JSON error shape."""

    def __init__(self, manager: web.Server, *, max_line_size: int, **kwargs):
        super().__init__(manager, max_line_size=max_line_size, max_field_size=max_line_size, **kwargs)
        self.limit = max_line_size

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if not isinstance(exc, HttpProcessingError) or request.writer.output_size > 0:
            return super().handle_error(request, status, exc, message)
        rid = uuid.uuid4().hex[:16]
        code, text = refusal(exc, self.limit)
        # Not HTTP at all on a new connection (a TLS hello, a port scan): aiohttp's level for it too.
        level = logging.DEBUG if isinstance(exc, BadHttpMethod) else logging.WARNING
        log.log(level, "refused a request the HTTP parser could not take",
                extra={"request_id": rid, "code": code, "reason": type(exc).__name__, "remote": request.remote})
        response = web.json_response(error_body(400, code, text, request_id=rid), status=400)
        response.headers.update(SECURITY_HEADERS)
        response.headers["X-Request-Id"] = rid
        response.force_close()
        return response


class _Server(web.Server):
    def __call__(self) -> RequestHandler:
        return JsonRefusals(self, loop=self._loop, **self._kwargs)


class WebRunner(web.AppRunner):
    """``web.AppRunner`` whose connections are :class:`JsonRefusals` with ``max_line_size`` for lines and fields."""

    def __init__(self, app: web.Application, *, max_line_size: int, **kwargs):
        super().__init__(app, max_line_size=max_line_size, **kwargs)

    async def _make_server(self) -> web.Server:
        plain = await super()._make_server()  # starts the application; its handler and request factory
        return _Server(plain.request_handler, request_factory=plain.request_factory, loop=plain._loop,
                       **plain._kwargs)
