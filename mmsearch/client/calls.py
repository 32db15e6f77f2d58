"""The requests of the client's calls, built and checked before anything is sent (pure).

Each builder refuses what is wrong in the caller's own program (two queries,
a text that is not a ``str``, a ``top_k`` that is not an integer) with
:class:`~mmsearch.client.errors.InvalidArgument` naming the field; ranges,
scenes, fields and tokens are serving's to judge, and its message comes back
as it wrote it.

:data:`IDEMPOTENT` says which methods may be sent again after ``UNAVAILABLE``:
a search or a scene listing changes nothing, and serving records one feedback
event per item, event and impression, so a repeat is counted once (it answers
``duplicate``). The write API, when serving has one, gets its row here: a
write is retried only if the API makes a repeat harmless.
"""
from __future__ import annotations

from typing import Iterable, Mapping, Sequence

from mmsearch.client.errors import InvalidArgument
from mmsearch.client.results import SearchPage
from mmsearch.v1 import retrieval_pb2

IDEMPOTENT = {"Search": True, "ListScenes": True, "Feedback": True}
EVENTS = {"click": retrieval_pb2.FEEDBACK_EVENT_CLICK, "dwell": retrieval_pb2.FEEDBACK_EVENT_DWELL,
          "skip": retrieval_pb2.FEEDBACK_EVENT_SKIP}
_INT32 = 2**31 - 1
_INT64 = 2**63 - 1


def _integer(name: str, value: object, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= high:
        raise InvalidArgument(f"{name} must be an integer from 0 to {high}, not {value!r}", field=name)
    return value


def _text(name: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(f"{name} must be a str, not {type(value).__name__}", field=name)
    return value


def search_request(scene: str, text: str | None = None, *, image: bytes | None = None,
                   similar_to: int | None = None, top_k: int = 0, page_size: int = 0, user_id: str = "",
                   diversify: bool = False, filters: Sequence[retrieval_pb2.Filter] = (),
                   facets: Iterable[str] = (), page_token: str = "",
                   force_arms: Mapping[str, str] | None = None, sort: str = "", collapse: str = "",
                   highlight: bool = False) -> retrieval_pb2.SearchRequest:
    """A ``SearchRequest`` with exactly one query: ``text``, ``image`` (encoded bytes) or ``similar_to``
    (a stored item's id). ``sort`` is a number field (``-FIELD``: descending), ``collapse`` a keyword field."""
    given = [name for name, v in (("text", text), ("image", image), ("similar_to", similar_to)) if v is not None]
    if len(given) != 1:
        raise InvalidArgument(f"give exactly one query: text, image or similar_to (got {given or 'none'})",
                              field="query")
    request = retrieval_pb2.SearchRequest(
        scene=_text("scene", scene), top_k=_integer("top_k", top_k, _INT32),
        page_size=_integer("page_size", page_size, _INT32), user_id=_text("user_id", user_id),
        diversify=bool(diversify), page_token=_text("page_token", page_token),
        facets=[_text("facets", f) for f in ([facets] if isinstance(facets, str) else facets)],
        sort=_text("sort", sort), collapse=_text("collapse", collapse), highlight=bool(highlight))
    if text is not None:
        request.text = _text("text", text)
    elif image is not None:
        if not isinstance(image, (bytes, bytearray, memoryview)):
            raise InvalidArgument(f"image must be the encoded image's bytes, not {type(image).__name__} (read "
                                  "the file: Path(name).read_bytes())", field="image")
        request.image = bytes(image)
    else:
        request.similar_to = _integer("similar_to", similar_to, _INT64)
    for i, condition in enumerate([filters] if isinstance(filters, retrieval_pb2.Filter) else filters):
        if not isinstance(condition, retrieval_pb2.Filter):
            raise InvalidArgument(f"filters[{i}] is a {type(condition).__name__}; build filters with "
                                  "mmsearch.client.field(name).eq(...) and the like", field=f"filters[{i}]")
        request.filters.append(condition)
    for layer, arm in (force_arms or {}).items():
        request.force_arms[_text("force_arms", layer)] = _text("force_arms", arm)
    return request


def next_page(request: retrieval_pb2.SearchRequest, page: SearchPage) -> retrieval_pb2.SearchRequest | None:
    """The request of the page after ``page`` (None after the last): the same query with its token."""
    if not page.next_page_token:
        return None
    following = retrieval_pb2.SearchRequest()
    following.CopyFrom(request)
    following.page_token = page.next_page_token
    return following


def feedback_request(feedback_token: str, item_id: int, event: str,
                     dwell_seconds: float | None = None) -> retrieval_pb2.FeedbackRequest:
    """A ``FeedbackRequest``: ``event`` is click, dwell (with ``dwell_seconds``) or skip."""
    if event not in EVENTS:
        raise InvalidArgument(f"event must be one of {sorted(EVENTS)}, not {event!r}", field="event")
    if dwell_seconds is not None and (isinstance(dwell_seconds, bool) or not isinstance(dwell_seconds, (int, float))):
        raise InvalidArgument(f"dwell_seconds must be a number of seconds, not {dwell_seconds!r}",
                              field="dwell_seconds")
    return retrieval_pb2.FeedbackRequest(feedback_token=_text("feedback_token", feedback_token),
                                         item_id=_integer("item_id", item_id, _INT64), event=EVENTS[event],
                                         dwell_seconds=float(dwell_seconds or 0.0))
