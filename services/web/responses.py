"""JSON shapes of the API (pure): search/scene responses and errors, gRPC status -> HTTP status, and the
security headers of every response.

The JSON mirrors the proto field names (``items[].retrieval_score``,
``timings[].ms`` ...) so the API returns what ``Search`` returns, plus
``elapsed_ms``: the web service's own wall time of the gRPC call.
"""
from __future__ import annotations

from typing import Any

import grpc
from google.protobuf.json_format import MessageToDict

from mmsearch.v1 import retrieval_pb2

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

# gRPC status -> (HTTP status, error code). Caller mistakes stay 4xx; a back end
# that is down or slow is 503/504; anything else upstream is a 502 (bad gateway).
_HTTP_OF = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400, "NOT_FOUND": 404,
            "ALREADY_EXISTS": 409, "UNAUTHENTICATED": 401, "PERMISSION_DENIED": 403, "RESOURCE_EXHAUSTED": 429,
            "UNIMPLEMENTED": 501, "UNAVAILABLE": 503, "CANCELLED": 503, "DEADLINE_EXCEEDED": 504}
STATUS_MAP: dict[grpc.StatusCode, tuple[int, str]] = {
    grpc.StatusCode[name]: (http, "unavailable" if name == "CANCELLED" else name.lower())
    for name, http in _HTTP_OF.items()}


def http_status(code: grpc.StatusCode) -> tuple[int, str]:
    """The HTTP status and error code for a gRPC status (502 ``upstream_error`` for the rest)."""
    return STATUS_MAP.get(code, (502, "upstream_error"))


def error_body(status: int, code: str, message: str, parameter: str | None = None,
               request_id: str | None = None, trace_id: str | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"status": status, "code": code, "message": message}
    if parameter is not None:
        error["parameter"] = parameter
    if request_id is not None:
        error["request_id"] = request_id
    if trace_id is not None:
        error["trace_id"] = trace_id
    return {"error": error}


# Statuses whose details are for the caller (what to fix in the request; PERMISSION_DENIED: a feedback
# token forged, altered or expired); every other one is the back end's problem, and its details
# (stages, stores, addresses) stay in the web service's log.
CALLER_ERRORS = frozenset({grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.OUT_OF_RANGE, grpc.StatusCode.NOT_FOUND,
                           grpc.StatusCode.PERMISSION_DENIED})


def caller_error(code: grpc.StatusCode, details: str = "") -> bool:
    """Whether the caller can fix what failed: :data:`CALLER_ERRORS`, or a FAILED_PRECONDITION of
    serving's ``request`` stage (a page token of an index version or experiment that changed since
    its first page: search again). Any other FAILED_PRECONDITION is a deployment mismatch."""
    return code in CALLER_ERRORS or (code == grpc.StatusCode.FAILED_PRECONDITION and details.startswith("request: "))


def upstream_message(code: grpc.StatusCode, request_id: str, what: str = "search") -> str:
    """What an anonymous client is told about a back-end failure of ``what`` (search, feedback): plain
    words and the request id, never the back end's details (they name internal stores and addresses)."""
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED, grpc.StatusCode.RESOURCE_EXHAUSTED):
        return f"{what} is temporarily unavailable; try again shortly (request id {request_id})"
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"{what} did not answer in time; try again shortly (request id {request_id})"
    return f"{what} failed on the server side (request id {request_id}); its operators can look it up in the log"


# Leading words of serving's INVALID_ARGUMENT / NOT_FOUND details (after "stage: ") -> the API parameter at fault.
_DETAIL_PARAMETER = (
    ("unknown scene", "scene"), ("scene", "scene"), ("text", "q"), ("give a query", "q"),
    ("image", "image"), ("top_k", "k"), ("page_size", "k"), ("user", "user"), ("filters", "filter"),
    ("facets", "facet"), ("page_token", "page_token"), ("sort", "sort"), ("collapse", "collapse"), ("similar_to", "id"), ("no item with id", "id"),
    ("feedback_token", "feedback_token"), ("item_id", "item_id"), ("event", "event"), ("dwell_seconds", "dwell_seconds"),
)


def blamed_parameter(details: str) -> str | None:
    """The API parameter that serving's INVALID_ARGUMENT details blame, if any (pure).

    ``request: text has 1200 characters ...`` -> ``q``; ``request: scene 't2t' does not
    accept image queries`` -> ``image`` (the upload is what that scene cannot take).
    """
    stage, sep, rest = details.partition(": ")
    text = rest if sep and " " not in stage else details
    if "does not accept image" in text:
        return "image"
    if "does not accept text" in text:
        return "q"
    for prefix, parameter in _DETAIL_PARAMETER:
        if text.startswith(prefix):
            return parameter
    return None


def _number(value: Any) -> Any:
    """Struct numbers arrive as floats: give integral ones back as ints (ids, counts)."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    if isinstance(value, dict):
        return {k: _number(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_number(v) for v in value]
    return value


def search_json(response: retrieval_pb2.SearchResponse, *, scene: str, elapsed_ms: float) -> dict[str, Any]:
    return {
        "scene": scene,
        "items": [
            {
                "id": item.id,
                "score": item.score,
                "retrieval_score": item.retrieval_score,
                "summary": _number(MessageToDict(item.summary)) if item.HasField("summary") else {},
                "found_by": [{"retriever": f.retriever, "rank": f.rank, "score": f.score} for f in item.found_by],
                "folded": item.folded,
                "highlights": [{"field": h.field, "kind": h.kind, "spans": [[s.start, s.end] for s in h.spans]}
                               for h in item.highlights],
            }
            for item in response.items
        ],
        "arm": response.arm,
        "assignments": [{"layer": a.layer, "arm": a.arm} for a in response.assignments],
        "timings": [{"stage": t.stage, "ms": t.ms} for t in response.timings],
        "missing_summaries": response.missing_summaries,
        "next_page_token": response.next_page_token,
        "offset": response.offset,
        "collection": response.collection,
        "cutoff": response.cutoff if response.HasField("cutoff") else None,
        "facets": [{"field": f.field, "candidates": f.candidates,
                    "counts": [{"value": c.value, "count": c.count} for c in f.counts]} for f in response.facets],
        "elapsed_ms": elapsed_ms,
        "impression_id": response.impression_id,
        "feedback_token": response.feedback_token,
    }


def scenes_json(response: retrieval_pb2.ListScenesResponse) -> dict[str, Any]:
    return {
        "scenes": [
            {"name": s.name, "modality": s.modality, "image_query": s.image_query, "layers": list(s.layers),
             "fields": [{"name": f.name, "type": f.type, "operators": list(f.operators), "facet": f.facet}
                        for f in s.fields], "collapse": s.collapse, "note": s.note, "text_fields": list(s.text_fields)}
            for s in response.scenes
        ]
    }


def feedback_json(response: retrieval_pb2.FeedbackResponse) -> dict[str, Any]:
    return {"impression_id": response.impression_id, "duplicate": response.duplicate}
