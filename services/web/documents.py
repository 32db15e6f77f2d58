"""``/api/documents``: live writes through the web service, relayed to the writer's gRPC DocumentService.

- ``POST /api/documents`` JSON ``{scene, documents: [{id, fields: {...}, image_base64?, image_url?}]}`` upserts;
- ``DELETE /api/documents?scene=&id=1&id=2`` deletes by id;
- ``GET /api/documents?scene=&id=...`` reads documents back: ``{documents: [{id, fields, content_sha256}],
  missing, collection}``.

A write answers per item, in request order: ``{results: [{index, id, status, field, reason}], collection,
position}`` with ``status`` ``applied``, ``unchanged``, ``refused`` (``field`` and ``reason`` say what to fix)
or ``not_found`` (a delete of an id the scene does not hold). An item whose JSON shape is wrong (an id that is
not an integer, fields that are not an object, an image that is not base64) is refused here, by item and
field, and the rest of the batch still goes to the writer; what only the collection can tell (a field's
type, a missing text field, an image that does not decode, a URL to a private address) the writer refuses
the same way.

Writes need scope ``write`` and the scene, reads scope ``search`` and the scene (the gate's rules, the
scene checked here before the call; the writer checks the relayed caller again). The body is bounded
before it is parsed (``MMSEARCH_DOCUMENTS_BODY_BYTES``: 413). A full write queue is 429 with the writer's
``Retry-After``; with ``MMSEARCH_WRITER_ADDRESS`` unset every ``/api/documents`` call is 501.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import math
from typing import Any, Callable

import grpc
from aiohttp import web
from google.protobuf import json_format, struct_pb2

from mmsearch.core.channels import channel_options
from mmsearch.core.documents import whole_numbers
from mmsearch.services.runtime.tls import Tls, channel as tls_channel
from mmsearch.services.web.access import GATE_KEY, ErrorFn, refuse_scene
from mmsearch.services.web.params import BadParameter, TooLarge
from mmsearch.services.web.responses import caller_error, http_status, upstream_message
from mmsearch.v1 import documents_pb2, documents_pb2_grpc

log = logging.getLogger(__name__)

STATUS_NAMES = {documents_pb2.ITEM_STATUS_APPLIED: "applied", documents_pb2.ITEM_STATUS_UNCHANGED: "unchanged",
                documents_pb2.ITEM_STATUS_REFUSED: "refused", documents_pb2.ITEM_STATUS_NOT_FOUND: "not_found"}
ITEM_KEYS = frozenset({"id", "fields", "image_base64", "image_url"})
MAX_IDS = 10_000
"""Most ids one DELETE or GET may name (the writer's own batch limit is usually lower and answers 400)."""


class WrongMediaType(BadParameter):
    """A body of a media type the route does not take (415)."""


class WriterClient:
    """One ``grpc.aio`` channel to the writer (TLS as the channel to serving), reused by every request."""

    def __init__(self, address: str, timeout: float, max_message_bytes: int, tls: Tls | None = None):
        self.address, self.timeout = address, timeout
        self.channel = tls_channel(address, tls, channel_options(max_message_bytes), grace=timeout)

    @property
    def stub(self) -> documents_pb2_grpc.DocumentServiceStub:
        return self.channel.stub(documents_pb2_grpc.DocumentServiceStub)

    async def upsert(self, request: documents_pb2.UpsertRequest, metadata) -> documents_pb2.WriteResponse:
        return await self.stub.Upsert(request, timeout=self.timeout, metadata=metadata)

    async def delete(self, scene: str, ids: list[int], metadata) -> documents_pb2.WriteResponse:
        return await self.stub.Delete(documents_pb2.DeleteRequest(scene=scene, ids=ids), timeout=self.timeout,
                                      metadata=metadata)

    async def get(self, scene: str, ids: list[int], metadata) -> documents_pb2.GetResponse:
        return await self.stub.Get(documents_pb2.GetRequest(scene=scene, ids=ids), timeout=self.timeout,
                                   metadata=metadata)

    async def close(self) -> None:
        await self.channel.close()


WRITER_KEY = web.AppKey("writer_client", WriterClient)


def refused(index: int, ident: Any, field: str, reason: str) -> dict[str, Any]:
    return {"index": index, "id": ident if isinstance(ident, int) and not isinstance(ident, bool) else None,
            "status": "refused", "field": field, "reason": reason}


def _item(index: int, item: Any) -> documents_pb2.Document | dict[str, Any]:
    """The gRPC document of one JSON item, or its refusal (an item whose shape is wrong). Pure."""
    if not isinstance(item, dict):
        return refused(index, None, "document", f"documents[{index}] is a {type(item).__name__}: send an object "
                       "{id, fields, image_base64?, image_url?}")
    ident = item.get("id")
    unknown = sorted(set(item) - ITEM_KEYS)
    if unknown:
        return refused(index, ident, unknown[0][:40], f"unknown key {unknown[0][:40]!r}: a document has "
                       f"{', '.join(sorted(ITEM_KEYS))} (its fields go inside 'fields')")
    if ident is not None and (isinstance(ident, bool) or not isinstance(ident, int) or not -2 ** 63 <= ident < 2 ** 63):
        return refused(index, ident, "id", f"id {str(ident)[:40]!r} is not an integer: ids are 64-bit integers")
    fields = item.get("fields", {})
    if not isinstance(fields, dict):
        return refused(index, ident, "fields", f"fields is a {type(fields).__name__}: send an object of field values")
    document = documents_pb2.Document()
    if ident is not None:
        document.id = ident
    try:
        struct = struct_pb2.Struct()
        struct.update(fields)
        document.fields.CopyFrom(struct)
    except (ValueError, TypeError) as exc:
        return refused(index, ident, "fields", f"fields cannot be carried: {str(exc)[:120]}")
    image, url = item.get("image_base64"), item.get("image_url")
    if image is not None:
        if not isinstance(image, str):
            return refused(index, ident, "image", "image_base64 must be a base64 string")
        try:
            document.image = base64.b64decode(image, validate=True)
        except (binascii.Error, ValueError):
            return refused(index, ident, "image", "image_base64 is not valid base64 (standard alphabet, padded)")
    if url is not None:
        if not isinstance(url, str):
            return refused(index, ident, "image_url", "image_url must be a string (an http or https URL)")
        document.image_url = url
    return document


def parse_upsert(body: bytes) -> tuple[str, list[documents_pb2.Document | dict[str, Any]]]:
    """``(scene, items)`` of a POST body: each item a Document to send or a refusal. BadParameter when the body
    as a whole is wrong. Pure."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise BadParameter("body", "the body is not JSON: send {\"scene\": ..., \"documents\": [...]}") from None
    if not isinstance(data, dict):
        raise BadParameter("body", "the body must be a JSON object {\"scene\": ..., \"documents\": [...]}")
    scene, documents = data.get("scene"), data.get("documents")
    if not isinstance(scene, str) or not scene:
        raise BadParameter("scene", "scene is required: the name of the scene to write to")
    if not isinstance(documents, list) or not documents:
        raise BadParameter("documents", "documents must be a non-empty list of {id, fields, image_base64?, "
                           "image_url?}")
    return scene[:200], [_item(i, item) for i, item in enumerate(documents)]


def parse_ids(query) -> tuple[str, list[int]]:
    """``(scene, ids)`` of a DELETE or GET query (``scene=`` once, ``id=`` repeated). Pure."""
    scene = query.get("scene", "")
    if not scene:
        raise BadParameter("scene", "scene is required: the name of the scene")
    raw = query.getall("id", [])
    if not raw:
        raise BadParameter("id", "give at least one id= (repeat it for several)")
    if len(raw) > MAX_IDS:
        raise BadParameter("id", f"{len(raw)} ids: at most {MAX_IDS} per call")
    ids = []
    for value in raw:
        try:
            ids.append(int(value))
        except ValueError:
            raise BadParameter("id", f"id {value[:40]!r} is not an integer") from None
        if not -2 ** 63 <= ids[-1] < 2 ** 63:
            raise BadParameter("id", f"id {value[:40]!r} is out of the 64-bit range")
    return scene[:200], ids


def write_json(response: documents_pb2.WriteResponse, local: list[dict[str, Any]], sent: list[int]) -> dict:
    """The answer of a write: the writer's results (their index mapped back to the request's, ``sent[i]``) and
    the refusals made here, in request order. Pure."""
    results = list(local)
    for r in response.results:
        results.append({"index": sent[r.index] if r.index < len(sent) else r.index, "id": r.id,
                        "status": STATUS_NAMES.get(r.status, "unknown"), "field": r.field or None,
                        "reason": r.reason or None})
    results.sort(key=lambda r: r["index"])
    return {"results": results, "collection": response.collection, "position": response.position}


def get_json(response: documents_pb2.GetResponse) -> dict:
    return {"documents": [{"id": d.id, "fields": whole_numbers(json_format.MessageToDict(d.fields)),
                           "content_sha256": d.content_sha256} for d in response.documents],
            "missing": list(response.missing), "collection": response.collection}


async def read_body(request: web.Request, limit: int) -> bytes:
    """The body; :class:`TooLarge` naming ``body`` past ``limit`` bytes (before it is read when its length is
    declared)."""
    if request.content_length is not None and request.content_length > limit:
        raise TooLarge("body", f"the body is {request.content_length} bytes, over the limit of {limit} "
                           "(MMSEARCH_DOCUMENTS_BODY_BYTES): split the batch")
    body = bytearray()
    while chunk := await request.content.read(256 * 1024):
        body.extend(chunk)
        if len(body) > limit:
            raise TooLarge("body", f"the body is over the limit of {limit} bytes (MMSEARCH_DOCUMENTS_BODY_BYTES): "
                               "split the batch")
    return bytes(body)


def add_routes(app: web.Application, json_error: ErrorFn, request_id: Callable[[web.Request], str],
               body_limit: int) -> None:
    """Register ``/api/documents`` (GET, POST, DELETE) on ``app``; the writer client is ``app[WRITER_KEY]`` when
    writes are configured."""

    def upstream(request: web.Request, exc: grpc.aio.AioRpcError, what: str) -> web.Response:
        status, name = http_status(exc.code())
        details = exc.details() or ""
        if exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED:
            response = json_error(request, 429, "rate_limited", details or "the write queue is full: retry later")
            wait = dict(exc.trailing_metadata() or ()).get("retry-after", "1")
            try:
                response.headers["Retry-After"] = str(max(1, math.ceil(float(wait))))
            except ValueError:
                response.headers["Retry-After"] = "1"
            return response
        if caller_error(exc.code(), details):
            return json_error(request, status, name, details or exc.code().name)
        rid = request_id(request)
        log.warning(f"{what} failed in the writer", extra={"grpc_code": exc.code().name, "details": details,
                                                           "writer": request.app[WRITER_KEY].address})
        return json_error(request, status, name, upstream_message(exc.code(), rid, what))

    def guarded(scope: str, what: str, work: Callable):
        async def handler(request: web.Request) -> web.Response:
            if WRITER_KEY not in request.app:
                return json_error(request, 501, "not_implemented", "live writes are not configured on this web "
                                  "service (MMSEARCH_WRITER_ADDRESS is unset): index with the offline jobs")
            try:
                scene, call = await work(request)
            except BadParameter as exc:
                status, code = ((413, "too_large") if isinstance(exc, TooLarge) else
                                (415, "unsupported_media_type") if isinstance(exc, WrongMediaType) else
                                (400, "bad_parameter"))
                return json_error(request, status, code, exc.message, exc.parameter)
            refusal = refuse_scene(request, scene, json_error, scope=scope, action=what)
            if refusal is not None:
                return refusal
            metadata = request.app[GATE_KEY].relay_metadata(request)
            try:
                return web.json_response(await call(request.app[WRITER_KEY], metadata))
            except grpc.aio.AioRpcError as exc:
                return upstream(request, exc, what)

        return handler

    async def upsert(request: web.Request):
        if request.content_type != "application/json":
            raise WrongMediaType("body", f"POST /api/documents takes application/json (got {request.content_type!r})")
        scene, items = parse_upsert(await read_body(request, body_limit))
        sent = [i for i, item in enumerate(items) if isinstance(item, documents_pb2.Document)]
        local = [item for item in items if isinstance(item, dict)]
        grpc_request = documents_pb2.UpsertRequest(scene=scene, documents=[items[i] for i in sent])

        async def call(client: WriterClient, metadata):
            if not sent:
                return write_json(documents_pb2.WriteResponse(), local, sent)
            return write_json(await client.upsert(grpc_request, metadata), local, sent)

        return scene, call

    async def delete(request: web.Request):
        scene, ids = parse_ids(request.query)

        async def call(client: WriterClient, metadata):
            return write_json(await client.delete(scene, ids, metadata), [], list(range(len(ids))))

        return scene, call

    async def get(request: web.Request):
        scene, ids = parse_ids(request.query)

        async def call(client: WriterClient, metadata):
            return get_json(await client.get(scene, ids, metadata))

        return scene, call

    # No HEAD: the gate's rules are per method here, and a HEAD must not reach a handler unchecked.
    app.router.add_get("/api/documents", guarded("search", "get", get), allow_head=False)
    app.router.add_post("/api/documents", guarded("write", "upsert", upsert))
    app.router.add_delete("/api/documents", guarded("write", "delete", delete))
