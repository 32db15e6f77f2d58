"""The stage runner: one owner for the deadline budget, per-stage timing, metrics and error mapping.

A search is a short sequence of stages (see :mod:`mmsearch.services.serving.pipeline.search`).
Stages that wait on a dependency run through :meth:`StageRunner.io`; stages
that only compute (rank) through :meth:`StageRunner.compute`. Both record
the stage's time in the response's timings and in the stage histogram, and
turn every failure into a :class:`~mmsearch.services.serving.errors.StageError`
naming the stage.

Decisions:
- Deadline split: the request's remaining time is shared among the I/O
  stages still to run by weight (:data:`STAGE_WEIGHTS`); a stage gets
  ``remaining * weight / weights of the stages still to run``, so time a fast
  stage leaves over goes to the later ones and the last stage gets all that
  is left. A stage that overruns its share fails with DEADLINE_EXCEEDED
  naming it, instead of starving the stages after it. The client library
  gets 90% of the share, so its own error (naming the cause) comes first.
- A timeout while the health probe sees the stage's dependency down is
  reported as UNAVAILABLE with the probe's finding: the dependency is down.
- Mapping (:func:`status_for`, pure): Unavailable -> UNAVAILABLE, BadInput
  -> INVALID_ARGUMENT, Mismatch -> FAILED_PRECONDITION, NotFound ->
  NOT_FOUND, TimeoutError -> DEADLINE_EXCEEDED; any other exception from a client library ->
  UNAVAILABLE naming the stage and the exception's type (never UNKNOWN).
- Traces: each stage is a span named after it (its failure's code on it), the Milvus and MongoDB calls
  spans inside it (:mod:`mmsearch.services.runtime.tracing`; nothing runs while tracing is off).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Awaitable, Callable, Mapping, TypeVar

import grpc

from mmsearch.v1 import retrieval_pb2
from mmsearch.services.runtime import tracing
from mmsearch.services.serving import metrics
from mmsearch.services.serving.errors import StageError, Unavailable, status_for

log = logging.getLogger(__name__)

Code = grpc.StatusCode
STAGE_WEIGHTS: dict[str, float] = {"fetch": 1.0, "preprocess": 1.0, "embed": 2.0, "match": 2.0, "summary": 1.0}
CLIENT_SHARE = 0.9
T = TypeVar("T")


def stage_budget(remaining_s: float, stage: str, stages_left: tuple[str, ...]) -> float:
    """This stage's share of the remaining deadline (see module doc). Pure."""
    total = sum(STAGE_WEIGHTS[s] for s in stages_left)
    return max(0.0, remaining_s) * STAGE_WEIGHTS[stage] / total if total else max(0.0, remaining_s)


class StageRunner:
    """Runs one request's stages against its deadline (see module doc)."""

    def __init__(self, deadline_s: float, stages: tuple[str, ...], *, scene: str, arm: str,
                 dependencies: Mapping[str, str], down: Mapping[str, str],
                 clock: Callable[[], float] = time.perf_counter):
        self._clock = clock
        self._end = clock() + deadline_s
        self._left = list(stages)
        self._scene, self._arm = scene, arm
        self._dependencies = dependencies  # stage -> the dependency name the health probe reports
        self._down = down
        self.timings: list[retrieval_pb2.StageTiming] = []

    def _record(self, stage: str, started: float) -> None:
        elapsed = self._clock() - started
        self.timings.append(retrieval_pb2.StageTiming(stage=stage, ms=elapsed * 1000))
        metrics.STAGE_LATENCY.labels(stage, self._scene, self._arm).observe(elapsed)

    def _down_problem(self, stage: str) -> str | None:
        dependency = self._dependencies.get(stage)
        problem = self._down.get(dependency) if dependency else None
        return f"{dependency} is down: {problem}" if problem else None

    def client_timeout(self, stage: str) -> float:
        """The client timeout ``stage`` would get if it started now (for a call started ahead of its stage)."""
        return stage_budget(self._end - self._clock(), stage, tuple(self._left)) * CLIENT_SHARE

    async def io(self, stage: str, call: Callable[[float], Awaitable[T]]) -> T:
        """Run ``call(client_timeout_s)`` within this stage's share of the deadline."""
        budget = stage_budget(self._end - self._clock(), stage, tuple(self._left))
        self._left.remove(stage)
        started = self._clock()
        with tracing.span(stage, {"mmsearch.stage": stage, "mmsearch.budget_ms": budget * 1000}) as span:
            try:
                if budget <= 0:
                    raise TimeoutError
                async with asyncio.timeout(budget):  # no extra task per stage, unlike wait_for
                    return await call(budget * CLIENT_SHARE)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                error = status_for(stage, exc, budget, self._down_problem(stage))
                if error.code == Code.UNAVAILABLE and not isinstance(exc, (Unavailable, TimeoutError, StageError)):
                    log.warning("unexpected backend error", exc_info=exc, extra={"stage": stage})
                if span is not None:
                    tracing.set_error(span, error.code.name, error.message)
                raise error from None
            finally:
                self._record(stage, started)

    def compute(self, stage: str, call: Callable[[], T]) -> T:
        """Run a stage that only computes (no deadline share)."""
        started = self._clock()
        with tracing.span(stage, {"mmsearch.stage": stage}):
            try:
                return call()
            except Exception as exc:
                raise status_for(stage, exc, 0.0) from None
            finally:
                self._record(stage, started)
