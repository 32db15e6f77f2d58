"""The aiohttp application: the search page, the JSON API, health and metrics.

Routes:
- ``GET /`` the page (static/index.html; its JS and CSS under ``/static/``);
- ``GET /api/search?scene=&q=&k=&user=&diversify=`` a text search;
- ``POST /api/search`` multipart form (``scene``, ``k``, ``user``, file ``image``) an image search;
- ``GET /api/scenes`` the scenes serving has loaded;
- ``POST /api/feedback`` JSON ``{feedback_token, item_id, event, dwell_seconds?}`` (the page sends it with
  ``navigator.sendBeacon``, so ``text/plain`` bodies are JSON too), rate-limited per client: a click, dwell
  or skip on a result, forwarded to serving's ``Feedback``;
- ``GET /healthz`` the process is up; ``GET /readyz`` serving answers its gRPC health check;
- ``GET /metrics`` Prometheus;
- ``GET /images/...`` only when ``MMSEARCH_IMAGES_DIR`` is set (thumbnails of a local image corpus).

Handlers are thin: parameters are validated by :mod:`services.web.params`,
shapes come from :mod:`services.web.responses`. Every ``/api`` error is JSON
``{"error": {"status", "code", "message", "parameter"?}}``.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Awaitable, Callable

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.web.client import ServingClient
from services.web.metrics import HTTP_LATENCY, HTTP_REQUESTS, UPSTREAM_LATENCY
from services.web.params import BadParameter, SearchQuery, TooLarge, parse_feedback, parse_search
from services.web.ratelimit import RateLimiter, client_address
from services.web.responses import (blamed_parameter, error_body, feedback_json, http_status, scenes_json, search_json,
                                    upstream_message)
from services.web.settings import WebSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CLIENT_KEY = web.AppKey("serving_client", ServingClient)
SETTINGS_KEY = web.AppKey("settings", WebSettings)
LIMITER_KEY = web.AppKey("feedback_limiter", RateLimiter)
FEEDBACK_TYPES = ("application/json", "text/plain")  # text/plain: what navigator.sendBeacon sends for a string

# The page loads only its own script and style; thumbnails may come from any http(s) host
# (an image corpus's base URL) and uploaded previews are blob: URLs.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob: http: https:; "
        "connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; form-action 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def json_error(status: int, code: str, message: str, parameter: str | None = None) -> web.Response:
    return web.json_response(error_body(status, code, message, parameter), status=status)


def _route_label(request: web.Request) -> str:
    info = request.match_info
    if info.http_exception is not None or info.route.resource is None:
        return "unmatched"
    return info.route.resource.canonical


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Metrics, security headers, and JSON bodies for every error under /api."""
    start = time.perf_counter()
    route = _route_label(request)
    status = 500
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                raise
            response = json_error(exc.status, exc.reason.lower().replace(" ", "_"),
                                  f"{request.method} {request.path}: {exc.reason}")
        except Exception:
            log.exception("unhandled error", extra={"path": request.path})
            response = json_error(500, "internal", "internal error in the web service; see its log")
        status = response.status
        response.headers.update(SECURITY_HEADERS)
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - start)


def _upstream_error(exc: grpc.aio.AioRpcError, address: str) -> web.Response:
    code = exc.code()
    status, name = http_status(code)
    details = exc.details() or ""
    parameter = blamed_parameter(details) if status == 400 else None
    return json_error(status, name, upstream_message(code, details, address), parameter)


async def _call(method: str, request: web.Request, call: Callable[[ServingClient], Awaitable]):
    client = request.app[CLIENT_KEY]
    start = time.perf_counter()
    code = grpc.StatusCode.OK
    try:
        return await call(client), (time.perf_counter() - start) * 1000.0
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
        raise
    finally:
        UPSTREAM_LATENCY.labels(method, code.name).observe(time.perf_counter() - start)


async def _search(request: web.Request, query: SearchQuery) -> web.Response:
    try:
        response, elapsed_ms = await _call("Search", request, lambda c: c.search(query))
    except grpc.aio.AioRpcError as exc:
        return _upstream_error(exc, request.app[CLIENT_KEY].address)
    return web.json_response(search_json(response, scene=query.scene, elapsed_ms=elapsed_ms))


async def search_get(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        query = parse_search(request.query, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars)
    except BadParameter as exc:
        return json_error(400, "bad_parameter", exc.message, exc.parameter)
    return await _search(request, query)


async def _read_form(request: web.Request, max_bytes: int) -> tuple[dict[str, str], bytes | None]:
    """Text fields and the ``image`` file of a multipart form; stops reading past ``max_bytes``."""
    fields: dict[str, str] = {}
    image: bytes | None = None
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if part.name == "image":
            data = bytearray()
            while chunk := await part.read_chunk(64 * 1024):
                data.extend(chunk)
                if len(data) > max_bytes:
                    raise TooLarge("image", f"image is larger than the limit of {max_bytes} bytes")
            image = bytes(data)
        elif part.name:
            fields[part.name] = await part.text()
    return fields, image


async def search_post(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if not request.content_type.startswith("multipart/form-data"):
        return json_error(
            415, "unsupported_media_type",
            f"POST /api/search takes multipart/form-data with an 'image' file field (got {request.content_type!r})",
            "image",
        )
    try:
        fields, image = await _read_form(request, settings.max_image_bytes)
        params = {**request.query, **fields}
        query = parse_search(params, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars,
                             image=image, max_image_bytes=settings.max_image_bytes)
    except BadParameter as exc:
        if isinstance(exc, TooLarge):
            return json_error(413, "too_large", exc.message, exc.parameter)
        return json_error(400, "bad_parameter", exc.message, exc.parameter)
    return await _search(request, query)


def max_token_chars(max_top_k: int) -> int:
    """Longest feedback token serving signs for a page of ``max_top_k`` items (~11 characters per id)."""
    return 2048 + 11 * max_top_k


async def feedback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    client = client_address(request.remote, request.headers, settings.client_ip_header)
    allowed, wait = request.app[LIMITER_KEY].allow(client)
    if not allowed:
        response = json_error(429, "rate_limited", f"too many feedback events from {client}: at most "
                              f"{settings.feedback_rate_per_second:g}/s (burst {settings.feedback_burst}); "
                              f"retry in {wait:.1f} s")
        response.headers["Retry-After"] = str(max(1, round(wait + 0.5)))
        return response
    if request.content_type not in FEEDBACK_TYPES:
        return json_error(415, "unsupported_media_type", f"POST /api/feedback takes a JSON body "
                          f"(application/json or text/plain; got {request.content_type!r})", "body")
    limit = max_token_chars(settings.max_top_k) + 1024
    body = bytearray()
    while chunk := await request.content.read(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            return json_error(413, "too_large", f"the feedback body is larger than {limit} bytes", "body")
    try:
        event = parse_feedback(bytes(body), max_token_chars(settings.max_top_k))
    except BadParameter as exc:
        return json_error(400, "bad_parameter", exc.message, exc.parameter)
    try:
        response, _ = await _call("Feedback", request, lambda c: c.feedback(event))
    except grpc.aio.AioRpcError as exc:
        return _upstream_error(exc, request.app[CLIENT_KEY].address)
    return web.json_response(feedback_json(response))


async def scenes(request: web.Request) -> web.Response:
    try:
        response, _ = await _call("ListScenes", request, lambda c: c.list_scenes())
    except grpc.aio.AioRpcError as exc:
        return _upstream_error(exc, request.app[CLIENT_KEY].address)
    return web.json_response(scenes_json(response))


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    client = request.app[CLIENT_KEY]
    ok, status = await client.ready()
    if ok:
        return web.json_response({"status": "ready", "serving": client.address})
    return json_error(503, "not_ready", f"serving at {client.address} is not ready: {status}")


async def metrics(request: web.Request) -> web.Response:
    response = web.Response(body=generate_latest(REGISTRY))
    response.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return response


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(settings: WebSettings) -> web.Application:
    """The application; its gRPC channel to serving opens on startup and closes on cleanup."""
    app = web.Application(middlewares=[observe], client_max_size=settings.max_image_bytes + 64 * 1024)
    app[SETTINGS_KEY] = settings
    app[LIMITER_KEY] = RateLimiter(settings.feedback_rate_per_second, settings.feedback_burst)

    async def serving_channel(app: web.Application):
        app[CLIENT_KEY] = ServingClient(settings.serving_address, settings.request_timeout_seconds,
                                        settings.max_message_bytes)
        yield
        await app[CLIENT_KEY].close()

    app.cleanup_ctx.append(serving_channel)
    app.router.add_get("/", page)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/api/search", search_get)
    app.router.add_post("/api/search", search_post)
    app.router.add_get("/api/scenes", scenes)
    app.router.add_post("/api/feedback", feedback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if settings.images_dir is not None:
        if not settings.images_dir.is_dir():
            raise ValueError(f"MMSEARCH_IMAGES_DIR {str(settings.images_dir)!r} is not a folder")
        app.router.add_static("/images/", settings.images_dir)
    return app
