"""Validation of the JSON API's request parameters (pure; no HTTP, no gRPC).

Each rule raises :class:`BadParameter` naming the parameter, the value and
what to send instead; the handlers turn it into a 400 with a JSON body.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

from mmsearch.v1 import retrieval_pb2

from mmsearch.core.errors import shown as _shown

SCENE_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
MAX_USER_CHARS = 128
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
class SearchQuery:
    """One validated search: exactly one of ``text`` and ``image`` is set."""

    scene: str
    text: str | None = None
    image: bytes | None = field(default=None, repr=False)
    top_k: int = 0  # 0: the arm's default (the proto's convention)
    user_id: str = ""
    diversify: bool = False


def parse_scene(value: str | None) -> str:
    if value is None or value == "":
        raise BadParameter("scene", "scene is required: pass one of the names listed by GET /api/scenes")
    if not SCENE_PATTERN.match(value):
        raise BadParameter(
            "scene", f"scene {_shown(value)} is not a scene name (1-64 letters, digits, '_' or '-'); "
            "see GET /api/scenes"
        )
    return value


def parse_top_k(value: str | None, max_top_k: int) -> int:
    if value is None or value == "":
        return 0
    try:
        k = int(value)
    except ValueError:
        raise BadParameter("k", f"k must be an integer between 1 and {max_top_k} (got {_shown(value)})") from None
    if not 1 <= k <= max_top_k:
        raise BadParameter("k", f"k must be between 1 and {max_top_k} (got {k})")
    return k


def parse_user(value: str | None) -> str:
    if value is None:
        return ""
    if len(value) > MAX_USER_CHARS:
        raise BadParameter("user", f"user must be at most {MAX_USER_CHARS} characters (got {len(value)})")
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


def parse_image(data: bytes | None, max_bytes: int) -> bytes:
    if not data:
        raise BadParameter("image", "image is empty: upload an encoded image file (JPEG, PNG, ...)")
    if len(data) > max_bytes:
        raise TooLarge("image", f"image is {len(data)} bytes; the limit is {max_bytes} bytes")
    return data


def parse_search(
    params: Mapping[str, str],
    *,
    max_top_k: int,
    max_query_chars: int,
    image: bytes | None = None,
    max_image_bytes: int = 0,
) -> SearchQuery:
    """A :class:`SearchQuery` from query/form parameters (``scene``, ``q``, ``k``, ``user``, ``diversify``).

    With ``image`` (a POSTed upload) the query is the image and ``q`` must be
    absent: one search has one query.
    """
    scene = parse_scene(params.get("scene"))
    top_k = parse_top_k(params.get("k"), max_top_k)
    user = parse_user(params.get("user"))
    diversify = parse_bool("diversify", params.get("diversify"))
    if image is not None:
        if params.get("q"):
            raise BadParameter("q", "send either q or an image, not both")
        return SearchQuery(scene, image=parse_image(image, max_image_bytes), top_k=top_k,
                           user_id=user, diversify=diversify)
    return SearchQuery(scene, text=parse_text(params.get("q"), max_query_chars), top_k=top_k,
                       user_id=user, diversify=diversify)


FEEDBACK_EVENTS = {"click": retrieval_pb2.FEEDBACK_EVENT_CLICK, "dwell": retrieval_pb2.FEEDBACK_EVENT_DWELL,
                   "skip": retrieval_pb2.FEEDBACK_EVENT_SKIP}
MAX_ITEM_ID = 2**63 - 1


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
    if isinstance(item, bool) or not isinstance(item, (int, str)) or not str(item).isdigit() \
            or not 0 <= int(item) <= MAX_ITEM_ID:
        raise BadParameter("item_id", f"item_id must be the id of a result on that page, a non-negative integer "
                                      f"(got {_shown(str(item))})")
    event = data.get("event")
    if event not in FEEDBACK_EVENTS:
        raise BadParameter("event", f"event must be one of {sorted(FEEDBACK_EVENTS)} (got {_shown(str(event))})")
    seconds = data.get("dwell_seconds", 0)
    if event == "dwell":
        if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not math.isfinite(seconds) \
                or seconds <= 0:
            raise BadParameter("dwell_seconds", f"dwell_seconds must be a number of seconds > 0 for a dwell event "
                                                f"(got {_shown(str(seconds))})")
    elif seconds not in (0, None):
        raise BadParameter("dwell_seconds", f"dwell_seconds is only for dwell events (got it on {event!r})")
    return FeedbackEvent(token, int(item), FEEDBACK_EVENTS[event], float(seconds or 0.0) if event == "dwell" else 0.0)
