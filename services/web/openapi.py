"""The OpenAPI 3.1 document of the JSON API, built from the rules the handlers apply (pure).

:func:`document` writes every route, parameter, body and error of
:mod:`mmsearch.services.web.app` with the bounds of
:mod:`mmsearch.services.web.params` (patterns, counts) and of the request
limits in force, so the document a running web serves at ``GET /openapi.json``
states that instance's limits. ``docs/openapi.json`` is the document with the
default limits (``python -m mmsearch.dev.openapi_doc`` writes it; a test keeps
it current, and checks the document's paths, methods and parameters against
the application's routes and the parameters ``params.py`` reads).

Every ``/api`` operation accepts an API key as ``Authorization: Bearer`` or
``X-API-Key``, or none where anonymous access is on for the scene
(docs/access.md); refusals are 401, 403 and 429 in the error shape.
"""
from __future__ import annotations

from typing import Any

from mmsearch.core.limits import RequestLimits
from mmsearch.services.web.params import (FEEDBACK_EVENTS, FIELD_PATTERN, MAX_FILTERS, MAX_ID, MAX_VALUE_CHARS,
                                          SCENE_PATTERN, TOKEN_PATTERN)

VERSION = "1.0.0"
"""The API's version: its major number changes only with a change a client would notice."""
_REF = "#/components/"
_BOOL = ("true", "false", "yes", "no", "on", "off", "1", "0")
# parse_bool: one of _BOOL in any case, spaces around it, or nothing at all.
BOOL_PATTERN = r"^\s*(" + "|".join("".join(f"[{c.upper()}{c}]" if c.isalpha() else c for c in word)
                                  for word in _BOOL) + r")?\s*$"


def _ref(kind: str, name: str) -> dict[str, str]:
    return {"$ref": f"{_REF}{kind}/{name}"}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def _object(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties) if required is None else required}


def _query(name: str, description: str, schema: dict[str, Any], required: bool = False,
           repeated: bool = False) -> dict[str, Any]:
    parameter = {"name": name, "in": "query", "required": required, "description": description, "schema": schema}
    if repeated:
        parameter.update(style="form", explode=True)
    return parameter


def parameters(limits: RequestLimits) -> dict[str, dict[str, Any]]:
    """The query parameters of the search routes, by name (``params.parse_search`` reads these)."""
    field_value = rf"^[A-Za-z_][A-Za-z0-9_]{{0,62}}!?:[\s\S]{{0,{MAX_VALUE_CHARS}}}$"
    return {
        "scene": _query("scene", "A scene name, one of GET /api/scenes.",
                        {"type": "string", "pattern": SCENE_PATTERN.pattern}, required=True),
        "q": _query("q", f"The query text: not blank, at most {limits.query_chars} characters (trimmed).",
                    {"type": "string", "minLength": 1, "maxLength": limits.query_chars, "pattern": r"\S"},
                    required=True),
        "id": _query("id", "The id of a stored item (items[].id of a search); more like it.",
                     {"type": "integer", "minimum": 0, "maximum": MAX_ID}, required=True),
        "k": _query("k", "Results per page; absent: the arm's match.top_k.",
                    {"type": "integer", "minimum": 1, "maximum": limits.top_k}),
        "user": _query("user", "The A/B bucketing key; absent: the default arm of every layer.",
                       {"type": "string", "maxLength": limits.user_id_chars}),
        "diversify": _query("diversify", "true/false (also 1/0, yes/no, on/off, empty = false): rank with the "
                                         "arm's diversify ranker (MMR).",
                            {"type": "string", "pattern": BOOL_PATTERN}),
        "filter": _query("filter", f"At most {MAX_FILTERS}, all of which must hold: FIELD:VALUE equals (several "
                                   "for one field: any of them); FIELD!:VALUE equals none of those given so; "
                                   "FIELD:LOW..HIGH a number range, either end may be left out.",
                         {"type": "array", "maxItems": MAX_FILTERS,
                          "items": {"type": "string", "pattern": field_value}}, repeated=True),
        "facet": _query("facet", "A keyword or bool field whose value counts to return (repeatable).",
                        {"type": "array", "items": {"type": "string", "pattern": FIELD_PATTERN.pattern}},
                        repeated=True),
        "page_token": _query("page_token", "next_page_token of the previous page, exactly as it came; empty: "
                                           "the first page.",
                             {"type": "string", "pattern": TOKEN_PATTERN.pattern.replace("{1,", "{0,")}),
        "sort": _query("sort", "FIELD (ascending) or -FIELD (descending): order what passes the arm's score cutoff "
                                 "by a number field of the scene; absent: the score order.",
                        {"type": "string", "pattern": "^-?" + FIELD_PATTERN.pattern[1:]}),
        "collapse": _query("collapse", "A keyword field of the scene: one hit per value of it (the best), "
                                         "items[].folded counting the others; facets count before collapsing. "
                                         "Absent: the scene's collapse (GET /api/scenes; video frames by video); "
                                         "-: none.",
                            {"type": "string", "pattern": "^(-|" + FIELD_PATTERN.pattern[1:-1] + ")$"}),
        "highlight": _query("highlight", "true/false: items[].highlights, the spans of the summary's text that "
                                           "matched a text query.", {"type": "string", "pattern": BOOL_PATTERN}),
    }


ARRANGE_PARAMETERS = ("sort", "collapse", "highlight")
SEARCH_PARAMETERS = ("scene", "q", "k", "user", "diversify", "filter", "facet", "page_token", *ARRANGE_PARAMETERS)
SIMILAR_PARAMETERS = ("scene", "id", "k", "user", "diversify", "filter", "facet", "page_token", *ARRANGE_PARAMETERS)
FORM_PARAMETERS = ("scene", "k", "user", "diversify", "filter", "facet", "page_token", *ARRANGE_PARAMETERS)


def _error_schema() -> dict[str, Any]:
    error = _object(["status", "code", "message", "request_id"],
                    status={"type": "integer", "description": "The HTTP status."},
                    code={"type": "string", "description": "bad_parameter, invalid_argument, failed_precondition, "
                                                           "unauthenticated, forbidden, not_found, too_large, "
                                                           "rate_limited, unavailable, deadline_exceeded ..."},
                    message={"type": "string", "description": "What to fix (4xx), or plain words and the "
                                                              "request id (5xx)."},
                    parameter={"type": "string", "description": "The parameter to fix, when there is one."},
                    request_id={"type": "string", "description": "This request's id (also X-Request-Id)."},
                    trace_id={"type": "string", "pattern": "^[0-9a-f]{32}$",
                              "description": "The request's trace id (W3C trace context), while tracing is on."})
    return _object(error=error)


def _schemas(limits: RequestLimits, max_token_chars: int) -> dict[str, Any]:
    number, integer, string = {"type": "number"}, {"type": "integer"}, {"type": "string"}
    item = _object(id={"type": "integer", "minimum": 0}, score=number, retrieval_score=number,
                   summary={"type": "object", "description": "The summary fields of the document."},
                   found_by={"type": "array", "items": _object(retriever=string, rank=integer, score=number)},
                   folded={"type": "integer", "minimum": 0, "description": "collapse: the hits folded into this one."},
                   highlights={"type": "array", "items": _object(
                       field=string, kind={"enum": ["terms", "sentence"]},
                       spans={"type": "array", "description": "[start, end) in code points of the field's text",
                              "items": {"type": "array", "items": integer, "minItems": 2, "maxItems": 2}})})
    facet = _object(field=string, candidates=integer,
                    counts={"type": "array", "items": _object(value=string, count=integer)})
    search = _object(
        scene=string, items={"type": "array", "items": _ref("schemas", "Item")}, arm=string,
        assignments={"type": "array", "items": _object(layer=string, arm=string)},
        timings={"type": "array", "items": _object(stage=string, ms=number)}, missing_summaries=integer,
        next_page_token={"type": "string", "description": "The next page's token; empty on the last page."},
        offset=integer, collection=string,
        cutoff={"type": ["number", "null"], "description": "The score threshold the arm applied; null: none."},
        facets={"type": "array", "items": _ref("schemas", "Facet")},
        elapsed_ms=number, impression_id=string, feedback_token=string)
    field = _object(name=string, type={"enum": ["keyword", "number", "bool"]},
                    operators={"type": "array", "items": {"enum": ["eq", "in", "range", "not"]}},
                    facet={"type": "boolean"})
    scene = _object(name=string, modality=string, image_query={"type": "boolean"},
                    layers={"type": "array", "items": string},
                    fields={"type": "array", "items": _ref("schemas", "SceneField")},
                    collapse={"type": "string", "description": "The field a search collapses on when it names "
                              "none (a scene of video frames: video; collapse=- turns it off); empty: none."},
                    note={"type": "string", "description": "One line of plain text about the scene, shown as text "
                          "under the scene picker (e.g. that its image tower is untrained); empty: none."},
                    text_fields={"type": "array", "items": string,
                                 "description": "The document fields whose text the live version embeds (its text "
                                                "template), in order: what a live write of a text document must "
                                                "carry (POST /api/documents). Empty for an image scene."})
    feedback = _object(
        ["feedback_token", "item_id", "event"],
        feedback_token={"type": "string", "minLength": 1, "maxLength": max_token_chars,
                        "description": "feedback_token of the search response"},
        item_id={"description": "An items[].id of that page: a number, or a decimal string",
                 "oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_ID},
                           {"type": "string", "pattern": r"^[0-9]{1,19}$"}]},
        event={"enum": sorted(FEEDBACK_EVENTS)},
        dwell_seconds={"type": ["number", "null"], "description": "dwell only: seconds > 0"})
    feedback.update({"if": {"properties": {"event": {"const": "dwell"}}},
                     "then": {"required": ["dwell_seconds"], "properties": {"dwell_seconds": {
                         "type": "number", "exclusiveMinimum": 0}}},
                     "else": {"properties": {"dwell_seconds": {"enum": [0, None]}}}})
    form = parameters(limits)
    image = {"type": "string", "format": "binary", "contentMediaType": "application/octet-stream",
             "description": f"The encoded image (JPEG, PNG, WebP ...), at most {limits.image_bytes} bytes."}
    image_form = _object(["image", "scene"], image=image,
                         **{name: form[name]["schema"] for name in FORM_PARAMETERS})
    return {"Error": _error_schema(), "Item": item, "Facet": facet, "SearchResponse": search,
            "SceneField": field, "Scene": scene, "ScenesResponse": _object(scenes={"type": "array",
                                                                                   "items": _ref("schemas", "Scene")}),
            "FeedbackRequest": feedback, "FeedbackResponse": _object(impression_id=string,
                                                                     duplicate={"type": "boolean"}),
            "ImageSearchForm": image_form, "Status": _object(status=string), **_document_schemas(limits)}


def _document_schemas(limits: RequestLimits) -> dict[str, Any]:
    """The bodies of ``/api/documents`` and ``/api/whoami`` (:mod:`mmsearch.services.web.documents`)."""
    string, ident = {"type": "string"}, {"type": "integer", "minimum": -2 ** 63, "maximum": 2 ** 63 - 1}
    maybe = {"type": ["string", "null"]}
    document = {"type": "object", "additionalProperties": False, "required": ["id"], "properties": {
        "id": ident, "fields": {"type": "object", "description": "The text the scene embeds, the collection's "
                                "scalar fields (typed as the collection declares them) and summary fields."},
        "image_base64": {"type": "string", "contentEncoding": "base64", "description": "Image scenes: the "
                         f"encoded image, at most {limits.image_bytes} bytes once decoded."},
        "image_url": {"type": "string", "format": "uri", "description": "Image scenes: an http(s) URL of a "
                      "public address the writer fetches (instead of image_base64)."}}}
    result = _object(["index", "id", "status"], index={"type": "integer", "minimum": 0},
                     id={"type": ["integer", "null"]},
                     status={"type": "string", "enum": ["applied", "unchanged", "refused", "not_found"]},
                     field=maybe, reason=maybe)
    return {"UpsertRequest": _object(scene={"type": "string", "minLength": 1, "pattern": SCENE_PATTERN.pattern},
                                     documents={"type": "array", "minItems": 1, "items": document}),
            "ItemResult": result,
            "WriteResponse": _object(results={"type": "array", "items": _ref("schemas", "ItemResult")},
                                     collection=string, position={"type": "integer", "minimum": 0}),
            "StoredDocument": _object(id={"type": "integer"}, fields={"type": "object"}, content_sha256=string),
            "GetDocumentsResponse": _object(documents={"type": "array", "items": _ref("schemas", "StoredDocument")},
                                            missing={"type": "array", "items": {"type": "integer"}},
                                            collection=string),
            "Whoami": _object(key_id=string, scopes={"type": "array", "items": string},
                              scenes={"type": ["array", "null"], "items": string})}


_ERRORS = {
    "400": "A parameter or body the caller must fix (bad_parameter), or serving's refusal of the request "
           "(invalid_argument; failed_precondition: a page token of an index version that changed, search again).",
    "401": "No API key where one is needed, or one that is not valid (WWW-Authenticate: Bearer).",
    "403": "The key lacks the route's scope or the scene; a feedback token forged, altered or expired.",
    "404": "An item id that is not in the index searched; an unknown path.",
    "405": "A method the path does not take (Allow lists those it does).",
    "413": "An image or body over its bound.",
    "415": "A body of a media type the route does not take.",
    "429": "Over the key's rate, too many feedback events from one client, or the write queue full "
           "(Retry-After: seconds).",
    "500": "A bug in web (logged under the request id).",
    "501": "Live writes are not configured on this web service (MMSEARCH_WRITER_ADDRESS unset).",
    "502": "Any other failure behind web.",
    "503": "Serving, or a store behind it, is down: try again shortly.",
    "504": "Serving did not answer within the request deadline.",
}
_HEADERS = {"401": "WWW-Authenticate", "405": "Allow", "429": "Retry-After"}


def _responses() -> dict[str, Any]:
    out = {}
    for status, description in _ERRORS.items():
        headers = {"X-Request-Id": _ref("headers", "X-Request-Id")}
        if status in _HEADERS:
            headers[_HEADERS[status]] = {"schema": {"type": "string"}, "required": True}
        out[status] = {"description": description, "headers": headers, "content": _json(_ref("schemas", "Error"))}
    return out


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {"description": description, "headers": {"X-Request-Id": _ref("headers", "X-Request-Id")},
            "content": _json(_ref("schemas", schema))}


def _errors(*statuses: str) -> dict[str, Any]:
    return {status: _ref("responses", status) for status in (*statuses, "405", "500", "502", "503", "504")}


_API_ERRORS = ("400", "401", "403", "429")
SECURITY = [{"bearer": []}, {"apiKey": []}, {}]


def _operation(operation_id: str, summary: str, ok: dict[str, Any], errors: dict[str, Any], **more: Any
               ) -> dict[str, Any]:
    return {"operationId": operation_id, "summary": summary, "responses": {"200": ok, **errors}, **more}


def paths(limits: RequestLimits, *, images: bool = False) -> dict[str, Any]:
    """Path -> method -> operation, as :func:`mmsearch.services.web.app.create_app` routes them."""
    def refs(names) -> list[dict[str, str]]:
        return [_ref("parameters", name) for name in names]

    found = _ok("SearchResponse", "One page of results")
    out: dict[str, Any] = {
        "/api/search": {
            "get": _operation("searchText", "A text search", found, _errors(*_API_ERRORS),
                              parameters=refs(SEARCH_PARAMETERS), security=SECURITY),
            "post": _operation("searchImage", "An image search (a multipart form; only scenes whose image_query "
                                              "is true take images)", found,
                               _errors(*_API_ERRORS, "413", "415"), security=SECURITY,
                               requestBody={"required": True, "content": {"multipart/form-data": {
                                   "schema": _ref("schemas", "ImageSearchForm")}}})},
        "/api/similar": {"get": _operation("searchSimilar", "More like a stored item (never itself in the results)",
                                           found, _errors(*_API_ERRORS, "404"), parameters=refs(SIMILAR_PARAMETERS),
                                           security=SECURITY)},
        "/api/scenes": {"get": _operation("listScenes", "The scenes serving has loaded and their filterable fields",
                                          _ok("ScenesResponse", "The scenes"), _errors(*_API_ERRORS),
                                          security=SECURITY)},
        "/api/feedback": {"post": _operation(
            "feedback", "A click, dwell or skip on a result; the same event on the same item counts once",
            _ok("FeedbackResponse", "Recorded (duplicate: it was already)"), _errors(*_API_ERRORS, "413", "415"),
            security=SECURITY, requestBody={"required": True, "content": {
                media: {"schema": _ref("schemas", "FeedbackRequest")} for media in ("application/json",
                                                                                    "text/plain")}})},
        "/api/documents": _document_paths(),
        "/api/whoami": {"get": _operation("whoami", "What the presented key may do (anonymous: what anonymous callers "
                                          "may); never another key", _ok("Whoami", "The key's id, scopes and scenes "
                                          "(null: every scene)"), _errors(*_API_ERRORS), security=SECURITY)},
        "/healthz": {"get": _operation("healthz", "The web process is up", _ok("Status", "{\"status\": \"ok\"}"),
                                       {})},
        "/readyz": {"get": _operation("readyz", "Serving answers its health check as SERVING",
                                      _ok("Status", "{\"status\": \"ready\"}"),
                                      {"503": _ref("responses", "503")})},
        "/openapi.json": {"get": _operation("openapi", "This document", {
            "description": "The OpenAPI document", "content": _json({"type": "object"})}, {})},
        "/": {"get": _operation("page", "The search page", {"description": "The page", "content": {
            "text/html": {"schema": {"type": "string"}}}}, {})},
    }
    if images:
        out["/images/{path}"] = {"get": _operation(
            "image", "A file of MMSEARCH_IMAGES_DIR", {"description": "The file", "content": {
                "image/*": {"schema": {"type": "string", "contentMediaType": "image/*"}}}}, {"404": {
                    "description": "No such file"}}, parameters=[{"name": "path", "in": "path", "required": True,
                                                                  "schema": {"type": "string"}}])}
    return out


def _document_paths() -> dict[str, Any]:
    """``/api/documents``: live writes (scope write and the scene) and reads by id (scope search)."""
    ids = [_ref("parameters", "scene"), _query("id", "A document id (repeat for several).",
                                                {"type": "array", "minItems": 1, "items": {"type": "integer"}},
                                                required=True, repeated=True)]
    errors = _errors(*_API_ERRORS, "404", "501")
    per_item = "One result per item, in request order: applied, unchanged, refused (field and reason) or not_found"
    return {
        "get": _operation("getDocuments", "Documents by id, as stored", _ok("GetDocumentsResponse", "The documents "
                          "found and the ids missing"), errors, parameters=ids, security=SECURITY),
        "post": _operation("upsertDocuments", "Add or replace documents (encoded with the collection's own model)",
                           _ok("WriteResponse", per_item), {**errors, **_errors("413", "415")}, security=SECURITY,
                           requestBody={"required": True, "content": _json(_ref("schemas", "UpsertRequest"))}),
        "delete": _operation("deleteDocuments", "Delete documents by id", _ok("WriteResponse", per_item), errors,
                             parameters=ids, security=SECURITY)}


def document(limits: RequestLimits, *, max_token_chars: int, images: bool = False) -> dict[str, Any]:
    """The OpenAPI 3.1 document of a web service with these request limits, whose feedback tokens have at most
    ``max_token_chars`` characters (see module doc)."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "mmsearch JSON API", "version": VERSION,
                 "description": "Search, more like this, scenes and feedback over HTTP (docs/api.md). Every "
                                "response carries X-Request-Id; every /api error is the Error object."},
        "paths": paths(limits, images=images),
        "components": {
            "parameters": parameters(limits),
            "schemas": _schemas(limits, max_token_chars),
            "responses": _responses(),
            "headers": {"X-Request-Id": {"description": "The request's id: the client's own X-Request-Id when it "
                                                        "is 1 to 64 of A-Za-z0-9._-, else a new one",
                                         "schema": {"type": "string"}, "required": True}},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer <key>"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"}},
        },
    }
