"""Validation of the JSON API's request parameters (pure; no HTTP, no gRPC).

Each rule raises :class:`BadParameter` naming the parameter, the value and
what to send instead; the handlers turn it into a 400 with a JSON body.

Filters in URLs (``filter``, repeatable; all must hold):

- ``filter=FIELD:VALUE``: the field equals VALUE (everything after the first
  ``:``, taken literally); several for the same field: one of them (IN);
- ``filter=FIELD!:VALUE``: the field equals none of the values given so (NOT);
- ``filter=FIELD:LOW..HIGH``: a number range, either end may be left out
  (``width:800..``, ``width:..1024``). A keyword value that itself looks like
  a range cannot be written this way.

Serving checks the field and the value's type against the scene's declared
fields (``GET /api/scenes`` lists them). ``facet=FIELD`` (repeatable) asks
for value counts, ``page_token`` continues a search, ``GET /api/similar``
takes ``id`` (a stored item) instead of ``q``. ``sort=FIELD`` / ``sort=-FIELD``
orders what passes the arm's cutoff by a number field (ascending /
descending), ``collapse=FIELD`` keeps one hit per value of a keyword field
(a scene of video frames collapses by ``video`` unless ``collapse=-``),
``highlight=true`` asks for the spans that matched; serving checks the fields.
"""
from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass, field
from typing import Any, Mapping

from mmsearch.core.errors import shown as _shown
from mmsearch.v1 import retrieval_pb2

SCENE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
FIELD_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
RANGE_PATTERN = re.compile(r"^(-?\d+(?:\.\d+)?)?\.\.(-?\d+(?:\.\d+)?)?$")
MAX_TOKEN_CHARS = 2048
TOKEN_PATTERN = re.compile(rf"^[A-Za-z0-9_.=-]{{1,{MAX_TOKEN_CHARS}}}$")
MAX_FILTERS = 16
NO_COLLAPSE = "-"  # collapse=-: no collapse, not even a scene's default one (serving's value)
MAX_VALUE_CHARS = 1024
MAX_ID = 2**63 - 1
ID_DIGITS = re.compile(r"[0-9]{1,19}")
"""An id written as a decimal string (``MAX_ID`` has 19 digits)."""
TRUE = {"1", "true", "yes", "on"}
FALSE = {"0", "false", "no", "off", ""}


class BadParameter(ValueError):
    """A request parameter the caller must fix; ``parameter`` names it."""

    def __init__(self, parameter: str, message: str):
        super().__init__(message)
        self.parameter = parameter
        self.message = message


class TooLarge(BadParameter):
    """An upload over the size limit (HTTP 413)."""


@dataclass(frozen=True)
class FilterParam:
    """One filter of the URL: ``op`` eq | in | not (``values``) or range (``low``/``high``)."""

    field: str
    op: str
    values: tuple[str, ...] = ()
    low: float | None = None
    high: float | None = None


@dataclass(frozen=True)
class SearchQuery:
    """One validated search: exactly one of ``text``, ``image`` and ``similar_to`` is set."""

    scene: str
    text: str | None = None
    image: bytes | None = field(default=None, repr=False)
    top_k: int = 0  # 0: the arm's default (the proto's convention)
    user_id: str = ""
    diversify: bool = False
    similar_to: int | None = None
    filters: tuple[FilterParam, ...] = ()
    facets: tuple[str, ...] = ()
    page_token: str = ""
    sort: str = ""          # FIELD or -FIELD
    collapse: str = ""
    highlight: bool = False


def parse_scene(value: str | None) -> str:
    if value is None or value == "":
        raise BadParameter("scene", "scene is required: pass one of the names listed by GET /api/scenes")
    if not SCENE_PATTERN.match(value):
        raise BadParameter(
            "scene", f"scene {_shown(value)} is not a scene name (1-64 letters, digits, '_' or '-'); "
            "see GET /api/scenes"
        )
    return value


def parse_integer(parameter: str, value: str, low: int, high: int) -> int:
    """``value`` as an integer in ``[low, high]``; BadParameter naming ``parameter`` otherwise."""
    try:
        number = int(value)
    except ValueError:
        raise BadParameter(parameter, f"{parameter} must be an integer between {low} and {high} "
                                      f"(got {_shown(value)})") from None
    if not low <= number <= high:
        raise BadParameter(parameter, f"{parameter} must be between {low} and {high} (got {number})")
    return number


def parse_top_k(value: str | None, max_top_k: int) -> int:
    if value is None or value == "":
        return 0
    return parse_integer("k", value, 1, max_top_k)


def parse_user(value: str | None, max_chars: int) -> str:
    if value is None:
        return ""
    if len(value) > max_chars:
        raise BadParameter("user", f"user must be at most {max_chars} characters (got {len(value)})")
    return value


def parse_bool(name: str, value: str | None) -> bool:
    if value is None:
        return False
    lowered = value.strip().lower()
    if lowered in TRUE:
        return True
    if lowered in FALSE:
        return False
    raise BadParameter(name, f"{name} must be true or false (got {_shown(value)})")


def parse_text(value: str | None, max_chars: int) -> str:
    if value is None or not value.strip():
        raise BadParameter("q", "q is required: the text to search for (or POST an image to /api/search)")
    if len(value) > max_chars:
        raise BadParameter("q", f"q must be at most {max_chars} characters (got {len(value)})")
    return value.strip()


def values_of(params: Mapping[str, Any], name: str) -> list[str]:
    """Every value of a repeatable parameter (a multidict's ``getall``; a plain mapping's one value)."""
    if hasattr(params, "getall"):
        return list(params.getall(name, []))
    value = params.get(name)
    return [] if value is None else [value]


def parse_filters(values: list[str]) -> tuple[FilterParam, ...]:
    """``filter`` parameters -> filters (see module doc); same-field equalities join into one IN."""
    if len(values) > MAX_FILTERS:
        raise BadParameter("filter", f"at most {MAX_FILTERS} filters (got {len(values)})")
    equal: dict[str, list[str]] = {}
    excluded: dict[str, list[str]] = {}
    ranges: list[FilterParam] = []
    for text in values:
        name, sep, value = text.partition(":")
        negated = name.endswith("!")
        name = name.removesuffix("!")
        if not sep or not FIELD_PATTERN.match(name):
            raise BadParameter("filter", f"filter {_shown(text)}: write FIELD:VALUE, FIELD!:VALUE or FIELD:LOW..HIGH "
                                         "(e.g. category:json, width:800..)")
        if len(value) > MAX_VALUE_CHARS:
            raise BadParameter("filter", f"filter {_shown(text)}: a value has at most {MAX_VALUE_CHARS} characters")
        bounds = RANGE_PATTERN.match(value)
        if bounds and (bounds.group(1) or bounds.group(2)) and not negated:
            low, high = (float(b) if b else None for b in bounds.groups())
            ranges.append(FilterParam(name, "range", low=low, high=high))
        else:
            (excluded if negated else equal).setdefault(name, []).append(value)
    unique = {n: tuple(dict.fromkeys(v)) for n, v in equal.items()}
    out = [FilterParam(n, "eq" if len(v) == 1 else "in", v) for n, v in unique.items()]
    out += [FilterParam(n, "not", tuple(dict.fromkeys(v))) for n, v in excluded.items()]
    return tuple(out + ranges)


def parse_facets(values: list[str]) -> tuple[str, ...]:
    for name in values:
        if not FIELD_PATTERN.match(name):
            raise BadParameter("facet", f"facet {_shown(name)} is not a field name; see GET /api/scenes")
    return tuple(dict.fromkeys(values))


def parse_field(parameter: str, value: str | None, *, signed: bool = False) -> str:
    """A field name (``-FIELD`` too with ``signed``: ``sort``; ``-`` alone, no collapse, without), or "" when
    absent."""
    if not value:
        return ""
    if not signed and value == NO_COLLAPSE:
        return value
    if not FIELD_PATTERN.match(value[1:] if signed and value.startswith("-") else value):
        how = "FIELD (ascending) or -FIELD (descending), a number field" if signed else "a keyword field"
        raise BadParameter(parameter, f"{parameter} {_shown(value)} is not a field name: give {how} of the scene "
                                      "(GET /api/scenes lists them)" + ("" if signed else ", or - for no collapse"))
    return value


def parse_page_token(value: str | None) -> str:
    if not value:
        return ""
    if not TOKEN_PATTERN.match(value):
        raise BadParameter("page_token", "page_token is not a token from a previous page (copy next_page_token "
                                         "as it came)")
    return value


def parse_id(value: str | None) -> int:
    if value is None or value == "":
        raise BadParameter("id", "id is required: the id of a stored item (items[].id of a search)")
    return parse_integer("id", value, 0, MAX_ID)


def parse_image(data: bytes | None, max_bytes: int) -> bytes:
    if not data:
        raise BadParameter("image", "image is empty: upload an encoded image file (JPEG, PNG, ...)")
    if len(data) > max_bytes:
        raise TooLarge("image", f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    return data


def parse_search(
    params: Mapping[str, Any],
    *,
    max_top_k: int,
    max_query_chars: int,
    max_user_chars: int,
    image: bytes | None = None,
    max_image_bytes: int = 0,
    similar: bool = False,
) -> SearchQuery:
    """A :class:`SearchQuery` from query/form parameters (``scene``, ``q``, ``k``, ``user``, ``diversify``,
    ``filter``, ``facet``, ``page_token``, ``sort``, ``collapse``, ``highlight``; ``id`` with ``similar``).

    With ``image`` (a POSTed upload) the query is the image and ``q`` must be
    absent: one search has one query. With ``similar`` (``GET /api/similar``)
    the query is the stored item ``id``.
    """
    scene = parse_scene(params.get("scene"))
    common = dict(top_k=parse_top_k(params.get("k"), max_top_k), user_id=parse_user(params.get("user"), max_user_chars),
                  diversify=parse_bool("diversify", params.get("diversify")),
                  filters=parse_filters(values_of(params, "filter")), facets=parse_facets(values_of(params, "facet")),
                  page_token=parse_page_token(params.get("page_token")),
                  sort=parse_field("sort", params.get("sort"), signed=True),
                  collapse=parse_field("collapse", params.get("collapse")),
                  highlight=parse_bool("highlight", params.get("highlight")))
    if similar:
        if params.get("q"):
            raise BadParameter("q", "GET /api/similar searches by id; send q to GET /api/search instead")
        return SearchQuery(scene, similar_to=parse_id(params.get("id")), **common)
    if image is not None:
        if params.get("q"):
            raise BadParameter("q", "send either q or an image, not both")
        return SearchQuery(scene, image=parse_image(image, max_image_bytes), **common)
    return SearchQuery(scene, text=parse_text(params.get("q"), max_query_chars), **common)


FEEDBACK_EVENTS = {"click": retrieval_pb2.FEEDBACK_EVENT_CLICK, "dwell": retrieval_pb2.FEEDBACK_EVENT_DWELL,
                   "skip": retrieval_pb2.FEEDBACK_EVENT_SKIP}


@dataclass(frozen=True)
class FeedbackEvent:
    """One validated feedback event for serving's Feedback."""

    feedback_token: str
    item_id: int
    event: int  # retrieval_pb2.FeedbackEvent
    dwell_seconds: float = 0.0


def parse_feedback(body: bytes, max_token_chars: int) -> FeedbackEvent:
    """A :class:`FeedbackEvent` from a JSON body ``{feedback_token, item_id, event, dwell_seconds?}``.

    ``item_id`` may be a JSON number or a decimal string (ids above 2**53 lose
    precision as JavaScript numbers). Serving checks the token itself.
    """
    try:
        data: Any = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise BadParameter("body", "the body must be a JSON object {feedback_token, item_id, event, "
                                   "dwell_seconds?}") from None
    if not isinstance(data, dict):
        raise BadParameter("body", "the body must be a JSON object {feedback_token, item_id, event, dwell_seconds?}")
    token = data.get("feedback_token")
    if not isinstance(token, str) or not token:
        raise BadParameter("feedback_token", "feedback_token is required: the feedback_token of the search response")
    if len(token) > max_token_chars:
        raise BadParameter("feedback_token", f"feedback_token has {len(token)} characters; at most {max_token_chars}")
    item = data.get("item_id")
    if isinstance(item, str) and ID_DIGITS.fullmatch(item):  # ASCII digits only: str.isdigit() also takes "²"
        item = int(item)
    if type(item) is not int or not 0 <= item <= MAX_ID:
        raise BadParameter("item_id", f"item_id must be the id of a result on that page, a non-negative integer "
                                      f"(got {_shown(str(item))})")
    event = data.get("event")
    if not isinstance(event, str) or event not in FEEDBACK_EVENTS:
        raise BadParameter("event", f"event must be one of {sorted(FEEDBACK_EVENTS)} (got {_shown(str(event))})")
    seconds = data.get("dwell_seconds", 0)
    if event == "dwell":
        # A float, or an int a float can hold (serving checks the upper bound); never a bool, NaN or infinity.
        if type(seconds) not in (int, float) or not 0 < seconds <= sys.float_info.max:
            raise BadParameter("dwell_seconds", f"dwell_seconds must be a number of seconds > 0 for a dwell event "
                                                f"(got {_shown(str(seconds))})")
    elif seconds not in (0, None):
        raise BadParameter("dwell_seconds", f"dwell_seconds is only for dwell events (got it on {event!r})")
    return FeedbackEvent(token, int(item), FEEDBACK_EVENTS[event], float(seconds or 0.0) if event == "dwell" else 0.0)
