"""Impressions out, feedback in: what a search response adds, and the Feedback call.

:class:`Impressions` turns one search response into an impression: an id, a
feedback token (:mod:`mmsearch.services.serving.outcomes.tokens`) and a document handed to the
event store's buffer (never awaited). :class:`FeedbackHandler` runs one
``Feedback`` call: :func:`validate_feedback` (pure: the request's fields),
then the token (signature, age, the item on the page), then one insert into
the event store within the deadline, then the live counters.

Statuses: a request field that is wrong, a malformed token or an item not
on the page -> INVALID_ARGUMENT; a forged, altered or expired token ->
PERMISSION_DENIED; the event store down -> UNAVAILABLE; impressions off ->
FAILED_PRECONDITION. Each message names the field and why. A repeated event
(the same click twice) is recorded once and answers ``duplicate = true``.
"""
from __future__ import annotations

import datetime as dt
import math
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

import grpc

from mmsearch.core import events as schema
from mmsearch.core.access.keys import Principal
from mmsearch.core.access.policy import Refusal, authorize
from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving import metrics
from mmsearch.services.serving.errors import StageError, status_for
from mmsearch.services.serving.outcomes.tokens import Signer, TokenError

Code = grpc.StatusCode
MAX_DWELL_SECONDS = 86400.0
EVENT_NAMES = {
    retrieval_pb2.FEEDBACK_EVENT_CLICK: "click",
    retrieval_pb2.FEEDBACK_EVENT_DWELL: "dwell",
    retrieval_pb2.FEEDBACK_EVENT_SKIP: "skip",
}


def _bad(message: str) -> StageError:
    return StageError("feedback", Code.INVALID_ARGUMENT, message)


@dataclass(frozen=True)
class Event:
    name: str                  # click | dwell | skip
    dwell_seconds: float | None


def validate_feedback(request: retrieval_pb2.FeedbackRequest) -> Event:
    """The request's event, or INVALID_ARGUMENT naming the field. Pure (the token is checked after)."""
    name = EVENT_NAMES.get(request.event)
    if name is None:
        raise _bad(f"event {request.event} is not one of FEEDBACK_EVENT_CLICK, FEEDBACK_EVENT_DWELL, "
                   "FEEDBACK_EVENT_SKIP")
    seconds = request.dwell_seconds
    if name == "dwell":
        if not math.isfinite(seconds) or not 0 < seconds <= MAX_DWELL_SECONDS:
            raise _bad(f"dwell_seconds {seconds} is out of range: a dwell event needs 0 < dwell_seconds <= "
                       f"{MAX_DWELL_SECONDS:.0f}")
        return Event(name, float(seconds))
    if seconds:
        raise _bad(f"dwell_seconds is set ({seconds}) on a {name} event; only dwell events carry it")
    return Event(name, None)


def via(layer: str, user_id: str, force_arms: Mapping[str, str]) -> str:
    """How a request got its arm in ``layer`` (see :mod:`mmsearch.core.events`). Pure."""
    if layer in force_arms:
        return "forced"
    return "bucket" if user_id else "default"


class Impressions:
    """Issues impression ids and tokens and hands the documents to the event store (see module doc)."""

    def __init__(self, signer: Signer, record: Callable[[dict], bool], clock: Callable[[], float] = time.time):
        self.signer, self._record, self._clock = signer, record, clock

    def issue(self, *, scene: str, label: str, kind: str, layers: Sequence[tuple[str, str, str]],
              user_id: str, force_arms: Mapping[str, str], item_ids: Sequence[int]) -> tuple[str, str]:
        """(impression id, feedback token) of one response; ``layers`` holds (layer, arm, default arm)."""
        now = self._clock()
        impression_id = secrets.token_hex(16)
        assignments = [(layer, arm) for layer, arm, _ in layers]
        token = self.signer.sign(impression_id, scene, assignments, item_ids, int(now * 1000))
        self._record(schema.impression_document(
            impression_id=impression_id, scene=scene, arm=label, query=kind,
            assignments=[(layer, arm, default, via(layer, user_id, force_arms)) for layer, arm, default in layers],
            item_ids=item_ids, user=schema.user_hash(self.signer.user_salt, user_id),
            at=dt.datetime.fromtimestamp(now, dt.timezone.utc)))
        for layer, arm in assignments:
            metrics.IMPRESSIONS.labels(scene, layer, arm).inc()
        return impression_id, token


_RESULT_OF = {Code.UNAVAILABLE: "unavailable", Code.DEADLINE_EXCEEDED: "unavailable", Code.FAILED_PRECONDITION: "off"}


class FeedbackHandler:
    """One Feedback call (see module doc); the event store has ``feedback(doc, timeout) -> duplicate``."""

    def __init__(self, signer: Signer, store, enabled: bool, clock: Callable[[], float] = time.time):
        self.signer, self.store, self.enabled, self._clock = signer, store, enabled, clock

    async def submit(self, request: retrieval_pb2.FeedbackRequest, deadline_s: float,
                     caller: Principal | None = None) -> retrieval_pb2.FeedbackResponse:
        """Record one event, or raise :class:`StageError`; every call counts in the results metric. ``caller``
        (when access is checked) must be allowed the token's scene."""
        result = "bad_request"
        try:
            response = await self._submit(request, deadline_s, caller)
        except TokenError as exc:
            result = exc.reason
            raise StageError("feedback", exc.code, str(exc)) from None
        except StageError as exc:
            result = _RESULT_OF.get(exc.code, "bad_request")
            raise
        else:
            result = "duplicate" if response.duplicate else "recorded"
        finally:
            metrics.FEEDBACK_RESULTS.labels(result).inc()
        return response

    async def _submit(self, request: retrieval_pb2.FeedbackRequest, deadline_s: float,
                      caller: Principal | None) -> retrieval_pb2.FeedbackResponse:
        if not self.enabled:
            raise StageError("feedback", Code.FAILED_PRECONDITION,
                             "impressions are off in this serving (MMSEARCH_IMPRESSIONS=false): no feedback is taken")
        event = validate_feedback(request)
        now = self._clock()
        claims = self.signer.verify(request.feedback_token, int(now * 1000))
        if caller is not None and not caller.may_touch(claims.scene):
            try:
                authorize(caller, "feedback", claims.scene)
            except Refusal as refusal:
                raise StageError("feedback", Code.PERMISSION_DENIED, refusal.message) from None
        rank = claims.rank_of(request.item_id)
        doc = schema.feedback_document(
            impression_id=claims.impression_id, scene=claims.scene, assignments=claims.assignments,
            item_id=request.item_id, rank=rank, event=event.name, dwell_seconds=event.dwell_seconds,
            at=dt.datetime.fromtimestamp(now, dt.timezone.utc))
        budget = max(0.0, deadline_s) * 0.9
        try:
            duplicate = await self.store.feedback(doc, budget)
        except Exception as exc:  # noqa: BLE001 - mapped like a stage's failure (never UNKNOWN)
            raise status_for("feedback", exc, budget) from None
        if not duplicate:
            for layer, arm in claims.assignments:
                metrics.FEEDBACK.labels(claims.scene, layer, arm, event.name).inc()
                if event.name == "click":
                    metrics.CLICK_RECIPROCAL_RANK.labels(claims.scene, layer, arm).inc(1.0 / rank)
        return retrieval_pb2.FeedbackResponse(impression_id=claims.impression_id, duplicate=duplicate)
