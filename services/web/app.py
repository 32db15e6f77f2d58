"""The aiohttp application: the search page, the JSON API, health and metrics.

Routes:
- ``GET /`` the page (static/index.html; its JS and CSS under ``/static/``);
- ``GET /api/search?scene=&q=&k=&user=&diversify=&filter=&facet=&page_token=`` a text search
  (filters, facets and pages: :mod:`services.web.params`);
- ``GET /api/similar?scene=&id=&...`` more like the stored item ``id`` (same parameters, no ``q``);
- ``POST /api/search`` multipart form (``scene``, ``k``, ``user``, ``filter``..., file ``image``) an image search;
- ``GET /api/scenes`` the scenes serving has loaded;
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
from multidict import MultiDict
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from services.web.client import ServingClient
from services.web.metrics import HTTP_LATENCY, HTTP_REQUESTS, UPSTREAM_LATENCY
from services.web.params import BadParameter, SearchQuery, TooLarge, parse_search
from services.web.responses import blamed_parameter, error_body, http_status, scenes_json, search_json, upstream_message
from services.web.settings import WebSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CLIENT_KEY = web.AppKey("serving_client", ServingClient)
SETTINGS_KEY = web.AppKey("settings", WebSettings)

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
    parameter = blamed_parameter(details) if status in (400, 404) else None
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


async def _get(request: web.Request, similar: bool) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        query = parse_search(request.query, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars,
                             similar=similar)
    except BadParameter as exc:
        return json_error(400, "bad_parameter", exc.message, exc.parameter)
    return await _search(request, query)


async def search_get(request: web.Request) -> web.Response:
    return await _get(request, similar=False)


async def similar_get(request: web.Request) -> web.Response:
    return await _get(request, similar=True)


async def _read_form(request: web.Request, max_bytes: int) -> tuple[MultiDict[str], bytes | None]:
    """Text fields (repeatable) and the ``image`` file of a multipart form; stops reading past ``max_bytes``."""
    fields: MultiDict[str] = MultiDict()
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
            fields.add(part.name, await part.text())
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
        params = MultiDict([*fields.items(), *request.query.items()])  # a form field wins over the URL's
        query = parse_search(params, max_top_k=settings.max_top_k, max_query_chars=settings.max_query_chars,
                             image=image, max_image_bytes=settings.max_image_bytes)
    except BadParameter as exc:
        if isinstance(exc, TooLarge):
            return json_error(413, "too_large", exc.message, exc.parameter)
        return json_error(400, "bad_parameter", exc.message, exc.parameter)
    return await _search(request, query)


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
    app.router.add_get("/api/similar", similar_get)
    app.router.add_get("/api/scenes", scenes)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    if settings.images_dir is not None:
        if not settings.images_dir.is_dir():
            raise ValueError(f"MMSEARCH_IMAGES_DIR {str(settings.images_dir)!r} is not a folder")
        app.router.add_static("/images/", settings.images_dir)
    return app
