"""The aiohttp application: the search page, the JSON API and health (Prometheus: its own port, main.py).

Routes:
- ``GET /`` the page (static/index.html; its JS and CSS under ``/static/``);
- ``GET /api/search?scene=&q=&k=&user=&diversify=&filter=&facet=&page_token=&sort=&collapse=&highlight=`` a text search
  (filters, facets and pages: :mod:`mmsearch.services.web.params`);
- ``GET /api/similar?scene=&id=&...`` more like the stored item ``id`` (same parameters, no ``q``);
- ``POST /api/search`` multipart form (``scene``, ``k``, ``user``, ``filter``..., file ``image``) an image search;
- ``GET /api/scenes`` the scenes serving has loaded; ``GET /api/whoami`` what the presented key may do;
- ``GET|POST|DELETE /api/documents`` live writes, relayed to the writer (:mod:`mmsearch.services.web.documents`);
- ``POST /api/feedback`` JSON ``{feedback_token, item_id, event, dwell_seconds?}`` (the page sends it with
  ``navigator.sendBeacon``, so ``text/plain`` bodies are JSON too), rate-limited per client address: a click, dwell
  or skip on a result, forwarded to serving's ``Feedback``;
- ``GET /healthz`` the process is up; ``GET /readyz`` serving answers its gRPC health check;
- ``GET /openapi.json`` the OpenAPI 3.1 document of this API (:mod:`mmsearch.services.web.openapi`);
- ``GET /images/...`` only when ``MMSEARCH_IMAGES_DIR`` is set (thumbnails of a local image corpus).

Every ``/api`` route needs an API key with the route's scope unless anonymous
access is on for the scene (:mod:`mmsearch.services.web.access`, docs/access.md);
the page, static files, health and the OpenAPI document are public.

Handlers are thin: parameters are validated by :mod:`mmsearch.services.web.params`,
shapes come from :mod:`mmsearch.services.web.responses`. Every ``/api`` error is JSON
``{"error": {"status", "code", "message", "parameter"?, "request_id"}}``.

Decisions (from a hostile probe):
- Every response carries the security headers and an ``X-Request-Id``; a 405
  keeps its ``Allow`` header, on ``/api`` (JSON) and elsewhere.
- Errors a client can fix (400, 404, 413, 415) say what to fix. Errors of the
  back end (5xx, and serving's FAILED_PRECONDITION: a deployment mismatch)
  give anonymous clients a generic message and the request id; the detail
  (which stage, which store, its address) goes to the web service's log under
  that id. A summary store that is down is "search is temporarily
  unavailable", not "serving is unavailable".
- A multipart upload is bounded before it is read: the declared length, the
  number of parts (:data:`MAX_FORM_PARTS`), each text field's size
  (:data:`MAX_FIELD_BYTES`) and the image's; a malformed body (no boundary,
  a boundary missing from the body, a truncated part) is a 400 naming
  ``body``, never a 500.
"""
from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from pathlib import Path
from typing import Awaitable, Callable

import grpc
from aiohttp import BodyPartReader, ClientPayloadError, web
from aiohttp.http_exceptions import HttpProcessingError
from multidict import MultiDict

from mmsearch.services.runtime import tracing
from mmsearch.services.web import traces
from mmsearch.services.web import documents
from mmsearch.services.web.access import GATE_KEY, Gate, gate_middleware, refuse_scene, whoami
from mmsearch.services.web.client import ServingClient
from mmsearch.services.web.files import image_handler
from mmsearch.services.web.metrics import HTTP_LATENCY, HTTP_REQUESTS, UPSTREAM_LATENCY
from mmsearch.services.web.openapi import document as openapi_document
from mmsearch.services.web.params import BadParameter, SearchQuery, TooLarge, parse_feedback, parse_search
from mmsearch.services.web.responses import (SECURITY_HEADERS, blamed_parameter, caller_error, error_body, feedback_json,
                                             http_status, scenes_json, search_json, upstream_message)
from mmsearch.services.web.settings import WebSettings

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).parent / "static"
CLIENT_KEY = web.AppKey("serving_client", ServingClient)
SETTINGS_KEY = web.AppKey("settings", WebSettings)
OPENAPI_KEY = web.AppKey("openapi", dict)
FEEDBACK_TYPES = ("application/json", "text/plain")  # text/plain: what navigator.sendBeacon sends for a string

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
REQUEST_ID = web.RequestKey("request_id", str)
_CLIENT_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,39}$")

FORM_FIELDS = ("scene", "k", "user", "diversify", "filter", "facet", "page_token", "sort", "collapse", "highlight")
"""The text fields of the search form (besides the ``image`` file; :func:`mmsearch.services.web.params.parse_search`)."""
REPEATED_FORM_FIELDS = ("filter", "facet")
MAX_FORM_PARTS = 32
"""Most parts one multipart form may have: the image, the single fields and up to
:data:`mmsearch.services.web.params.MAX_FILTERS` (16) filters still leave room for five facets."""
MAX_FIELD_BYTES = 64 * 1024
"""Largest text field of a multipart form (the query text is at most MMSEARCH_MAX_QUERY_CHARS characters)."""


def json_error(request: web.Request, status: int, code: str, message: str, parameter: str | None = None
               ) -> web.Response:
    """An error in the API's JSON shape; every one carries the request's id (:func:`request_id`), and its trace's
    id while tracing is on."""
    return web.json_response(error_body(status, code, message, parameter, request_id(request), tracing.trace_id()),
                             status=status)


def request_id(request: web.Request) -> str:
    """This request's id: the client's ``X-Request-Id`` when it is a plain token, else a new one."""
    if REQUEST_ID not in request:
        given = request.headers.get("X-Request-Id", "")
        request[REQUEST_ID] = given if _CLIENT_REQUEST_ID.match(given) else uuid.uuid4().hex[:16]
    return request[REQUEST_ID]


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Metrics, security headers and the request id on every response, JSON bodies for every error under /api."""
    start = time.perf_counter()
    route = traces.route_of(request)
    status = 500
    rid = request_id(request)
    try:
        try:
            response = await handler(request)
        except web.HTTPException as exc:
            if not request.path.startswith("/api/") or exc.status < 400:
                exc.headers.update(SECURITY_HEADERS)  # a 404/405 page or a redirect: the same headers
                exc.headers["X-Request-Id"] = rid
                raise
            response = json_error(request, exc.status, exc.reason.lower().replace(" ", "_"),
                                  f"{request.method} {request.path[:200]}: {exc.reason}")
            if "Allow" in exc.headers:
                response.headers["Allow"] = exc.headers["Allow"]
        except Exception:
            log.exception("unhandled error", extra={"path": request.path[:200], "request_id": rid})
            response = json_error(request, 500, "internal", f"internal error in the web service (request id {rid})")
        status = response.status
        response.headers.update(SECURITY_HEADERS)
        response.headers["X-Request-Id"] = rid
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    finally:
        HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        HTTP_LATENCY.labels(route, request.method).observe(time.perf_counter() - start)


def _upstream_error(request: web.Request, exc: grpc.aio.AioRpcError, what: str = "search") -> web.Response:
    code = exc.code()
    status, name = http_status(code)
    details = exc.details() or ""
    rid = request_id(request)
    if caller_error(code, details):
        return json_error(request, status, name, details or code.name, blamed_parameter(details))
    log.warning(f"{what} back end failed: {code.name}: {details}", extra={"request_id": rid, "grpc_code": code.name, "details": details,
                                                   "serving": request.app[CLIENT_KEY].address})
    return json_error(request, status, name, upstream_message(code, rid, what))


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
    refused = refuse_scene(request, query.scene, json_error)
    if refused is not None:
        return refused
    metadata = request.app[GATE_KEY].relay_metadata(request)
    try:
        response, elapsed_ms = await _call("Search", request, lambda c: c.search(query, metadata))
    except grpc.aio.AioRpcError as exc:
        return _upstream_error(request, exc)
    return web.json_response(search_json(response, scene=query.scene, elapsed_ms=elapsed_ms))


async def _get(request: web.Request, similar: bool) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    try:
        query = parse_search(request.query, max_top_k=settings.limits.top_k, max_query_chars=settings.limits.query_chars,
                             max_user_chars=settings.limits.user_id_chars,
                             similar=similar)
    except BadParameter as exc:
        return json_error(request, 400, "bad_parameter", exc.message, exc.parameter)
    return await _search(request, query)


async def search_get(request: web.Request) -> web.Response:
    return await _get(request, similar=False)


async def similar_get(request: web.Request) -> web.Response:
    return await _get(request, similar=True)


def form_limit(max_image_bytes: int) -> int:
    """The largest multipart body accepted: the image and every other part at its largest."""
    return max_image_bytes + MAX_FORM_PARTS * MAX_FIELD_BYTES


async def _read_part(part, name: str, limit: int, what: str) -> bytes:
    data = bytearray()
    while chunk := await part.read_chunk(64 * 1024):
        data.extend(chunk)
        if len(data) > limit:
            raise TooLarge(name, f"{what} is larger than the limit of {limit} bytes")
    return bytes(data)


async def _read_form(request: web.Request, max_bytes: int) -> tuple[MultiDict[str], bytes | None]:
    """Text fields (``filter`` and ``facet`` repeat) and the ``image`` file of a multipart form, every
    part bounded before it is read (see module doc); BadParameter naming ``body`` when the body is not
    well-formed multipart."""
    limit = form_limit(max_bytes)
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge("body", f"the request body is {request.content_length} bytes, over the limit of {limit}")
    fields: MultiDict[str] = MultiDict()
    image: bytes | None = None
    try:
        reader = await request.multipart()
        for _ in range(MAX_FORM_PARTS + 1):
            part = await reader.next()
            if part is None:
                return fields, image
            if not isinstance(part, BodyPartReader):
                raise BadParameter("body", "nested multipart bodies are not accepted: send one flat form")
            name = part.name or ""
            if name == "image":
                image = await _read_part(part, "image", max_bytes, "image")
                continue
            blamed = name if _FIELD_NAME.match(name) else "body"  # never echo a hostile name as the parameter
            data = await _read_part(part, blamed, MAX_FIELD_BYTES, f"field {name[:40]!r}")
            if name:
                try:
                    fields.add(name, data.decode(part.get_charset("utf-8")))
                except (UnicodeDecodeError, LookupError):
                    raise BadParameter(blamed, f"field {name[:40]!r} is not UTF-8 text") from None
    except BadParameter:
        raise
    except (ValueError, LookupError, AssertionError, RuntimeError, asyncio.IncompleteReadError,
            ClientPayloadError, HttpProcessingError) as exc:
        raise BadParameter("body", f"the multipart body is malformed ({type(exc).__name__}: {str(exc)[:120]}); "
                           "send multipart/form-data with a boundary and complete parts") from None
    raise BadParameter("body", f"the form has more than {MAX_FORM_PARTS} parts: send only "
                       f"{', '.join(FORM_FIELDS)} ({' and '.join(REPEATED_FORM_FIELDS)} repeatable) and the image")


async def _refused_upload(request: web.Request, response: web.Response, limit: int) -> web.Response:
    """Answer a refused upload: read (and drop) what is left of a body within ``limit`` bytes, so a
    client that sends its whole body before reading the answer gets it; close the connection past that."""
    left = limit
    try:
        while left > 0 and (chunk := await request.content.readany()):
            left -= len(chunk)
    except Exception:  # the client went away, or its body is broken: nothing more to read
        left = 0
    if left <= 0 or not request.content.at_eof():
        response.force_close()
    return response


async def search_post(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if not request.content_type.startswith("multipart/form-data"):
        return json_error(
            request, 415, "unsupported_media_type",
            f"POST /api/search takes multipart/form-data with an 'image' file field (got {request.content_type!r})",
            "image",
        )
    try:
        fields, image = await _read_form(request, settings.limits.image_bytes)
        params = MultiDict([*fields.items(), *request.query.items()])  # a form field wins over the URL's
        query = parse_search(params, max_top_k=settings.limits.top_k, max_query_chars=settings.limits.query_chars,
                             max_user_chars=settings.limits.user_id_chars,
                             image=image, max_image_bytes=settings.limits.image_bytes)
    except BadParameter as exc:
        status, code = (413, "too_large") if isinstance(exc, TooLarge) else (400, "bad_parameter")
        response = json_error(request, status, code, exc.message, exc.parameter)
        return await _refused_upload(request, response, form_limit(settings.limits.image_bytes))
    return await _search(request, query)


def max_token_chars(max_top_k: int) -> int:
    """Longest feedback token serving signs for a page of ``max_top_k`` items (~11 characters per id)."""
    return 2048 + 11 * max_top_k


async def feedback(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS_KEY]
    if request.content_type not in FEEDBACK_TYPES:
        return json_error(request, 415, "unsupported_media_type", f"POST /api/feedback takes a JSON body "
                          f"(application/json or text/plain; got {request.content_type!r})", "body")
    limit = max_token_chars(settings.limits.top_k) + 1024
    body = bytearray()
    while chunk := await request.content.read(64 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            return json_error(request, 413, "too_large", f"the feedback body is larger than {limit} bytes", "body")
    try:
        event = parse_feedback(bytes(body), max_token_chars(settings.limits.top_k))
    except BadParameter as exc:
        return json_error(request, 400, "bad_parameter", exc.message, exc.parameter)
    try:
        metadata = request.app[GATE_KEY].relay_metadata(request)
        response, _ = await _call("Feedback", request, lambda c: c.feedback(event, metadata))
    except grpc.aio.AioRpcError as exc:
        return _upstream_error(request, exc, "feedback")
    return web.json_response(feedback_json(response))


async def scenes(request: web.Request) -> web.Response:
    try:
        metadata = request.app[GATE_KEY].relay_metadata(request)
        response, _ = await _call("ListScenes", request, lambda c: c.list_scenes(metadata))
    except grpc.aio.AioRpcError as exc:
        return _upstream_error(request, exc)
    return web.json_response(scenes_json(response))


async def _whoami(request: web.Request) -> web.Response:
    return whoami(request, json_error)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    client = request.app[CLIENT_KEY]
    ok, status = await client.ready()
    if ok:
        return web.json_response({"status": "ready"})
    rid = request_id(request)
    log.warning("not ready", extra={"request_id": rid, "serving": client.address, "status": status})
    return json_error(request, 503, "not_ready", f"the search back end is not ready (request id {rid})")


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI_KEY])


async def page(request: web.Request) -> web.FileResponse:
    return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})


def create_app(settings: WebSettings) -> web.Application:
    """The application; its gRPC channel to serving opens on startup and closes on cleanup."""
    app = web.Application(middlewares=[*traces.middlewares(), observe, gate_middleware(json_error)],
                          client_max_size=settings.limits.image_bytes + 64 * 1024)
    app[SETTINGS_KEY] = settings
    app[GATE_KEY] = Gate(settings)
    app[OPENAPI_KEY] = openapi_document(settings.limits, max_token_chars=max_token_chars(settings.limits.top_k),
                                       images=settings.images_dir is not None)

    async def serving_channel(app: web.Application):
        app[CLIENT_KEY] = ServingClient(settings.serving_address, settings.request_timeout_seconds,
                                        settings.max_message_bytes, tls=settings.tls)
        yield
        await app[CLIENT_KEY].close()

    app.cleanup_ctx.append(serving_channel)
    if settings.writer_address:
        async def writer_channel(app: web.Application):
            app[documents.WRITER_KEY] = documents.WriterClient(settings.writer_address, settings.write_timeout_seconds,
                                                               settings.max_message_bytes, tls=settings.tls)
            yield
            await app[documents.WRITER_KEY].close()

        app.cleanup_ctx.append(writer_channel)
    documents.add_routes(app, json_error, request_id, settings.documents_body_bytes)
    app.router.add_get("/api/whoami", _whoami)
    app.router.add_get("/", page)
    app.router.add_static("/static/", STATIC_DIR, append_version=False)
    app.router.add_get("/api/search", search_get)
    app.router.add_post("/api/search", search_post)
    app.router.add_get("/api/similar", similar_get)
    app.router.add_get("/api/scenes", scenes)
    app.router.add_post("/api/feedback", feedback)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/openapi.json", openapi)
    if settings.images_dir is not None:
        if not settings.images_dir.is_dir():
            raise ValueError(f"MMSEARCH_IMAGES_DIR {str(settings.images_dir)!r} is not a folder")
        app.router.add_get("/images/{path:.+}", image_handler(settings.images_dir))
    return app
