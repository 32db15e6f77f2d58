"""The web service's part of a trace: a server span per HTTP request, continuing the caller's ``traceparent``.

Installed by :func:`mmsearch.services.web.app.create_app` only while tracing is on
(:mod:`mmsearch.services.runtime.tracing`): the span is named after the route
(``GET /api/search``), carries the status, and is current while the handler
runs, so the call to serving (its client span and ``traceparent``), the log
lines and the JSON error body (``trace_id`` beside ``request_id``) share its trace.
"""
from __future__ import annotations

from typing import Awaitable, Callable

from aiohttp import web

from mmsearch.services.runtime import tracing

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_of(request: web.Request) -> str:
    """The route's pattern (``/api/search``), ``unmatched`` for a path no route serves. Pure."""
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


@web.middleware
async def traced(request: web.Request, handler: Handler) -> web.StreamResponse:
    route = route_of(request)
    attributes = {"http.request.method": request.method, "http.route": route, "url.path": request.path[:200]}
    with tracing.continued(request.headers, f"{request.method} {route}", attributes) as span:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            span.set_attribute("http.response.status_code", exc.status)
            if exc.status >= 500:
                tracing.set_error(span, str(exc.status))
            raise
        span.set_attribute("http.response.status_code", response.status)
        if response.status >= 500:
            tracing.set_error(span, str(response.status))
        return response


def middlewares() -> list:
    """[:func:`traced`] while tracing is on, else nothing."""
    return [traced] if tracing.enabled() else []
