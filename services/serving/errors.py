"""The errors serving's backends raise, and the one error a search ends with.

Every backend (preprocess client, encoders, matcher, summary store) turns
its library's failures into one of three kinds, so the stage runner maps
them to a gRPC status in one place (:func:`status_for`, used by the stage runner of
:mod:`mmsearch.services.serving.pipeline.stages` and by the Feedback call):

- :class:`Unavailable`: the dependency cannot be reached -> ``UNAVAILABLE``;
- :class:`BadInput`: the caller's query was refused -> ``INVALID_ARGUMENT``;
- :class:`Mismatch`: the deployment does not fit (a model, collection or
  parameter the config names is missing or refused) -> ``FAILED_PRECONDITION``;
- :class:`NotFound`: the request names a stored item that does not exist
  (more like this on an unknown id) -> ``NOT_FOUND``.

A ``TimeoutError`` is a stage over its share of the deadline. Anything else
a client library raises is unexpected; the runner still answers
``UNAVAILABLE`` naming the stage and the exception's type, never ``UNKNOWN``
and never the library's text (logged instead).
"""
from __future__ import annotations

import grpc


class BackendError(Exception):
    """A backend failure; ``str()`` is the message for the caller."""


class Unavailable(BackendError):
    """The dependency cannot be reached."""


class BadInput(BackendError, ValueError):
    """The query (or what preprocess made of it) cannot be used."""


class Mismatch(BackendError):
    """The deployment does not fit the config: a missing model or collection, refused parameters."""


class NotFound(BackendError):
    """The item the request names is not in the index."""


class StageError(Exception):
    """A failed search: the gRPC status and a message that names the stage."""

    def __init__(self, stage: str, code: grpc.StatusCode, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage, self.code, self.message = stage, code, message


Code = grpc.StatusCode


def status_for(stage: str, exc: BaseException, budget_s: float, down: str | None = None) -> StageError:
    """The StageError for a stage that raised ``exc`` (see module doc). Pure."""
    if isinstance(exc, StageError):
        return exc
    if isinstance(exc, Unavailable):
        return StageError(stage, Code.UNAVAILABLE, str(exc))
    if isinstance(exc, BadInput):
        return StageError(stage, Code.INVALID_ARGUMENT, str(exc))
    if isinstance(exc, Mismatch):
        return StageError(stage, Code.FAILED_PRECONDITION, str(exc))
    if isinstance(exc, NotFound):
        return StageError(stage, Code.NOT_FOUND, str(exc))
    if isinstance(exc, TimeoutError):
        if down:
            return StageError(stage, Code.UNAVAILABLE, down)
        return StageError(stage, Code.DEADLINE_EXCEEDED,
                          f"no answer within its {budget_s * 1000:.0f} ms share of the deadline")
    # The exception's text is the library's (internal locations, reprs): the log has it, the caller does not.
    return StageError(stage, Code.UNAVAILABLE, f"unexpected {type(exc).__name__} from the backend; see serving's log")
