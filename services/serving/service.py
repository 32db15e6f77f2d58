"""The thin gRPC servicer of RetrievalService: deadline in, search or feedback, status out.

ListScenes also says what each scene serves: the collection its default arm
searches now, its version, documents, sync generation and the evaluation it
was published on (:func:`scene_message`, from the route watcher's records),
the fields requests may filter and facet on, the fields a live write's text
embeds (:func:`text_fields`), and the scene's note.
"""
from __future__ import annotations

import logging
from typing import Any, Mapping

import grpc

from mmsearch.core.errors import clipped
from mmsearch.core.fields import FACET_TYPES
from mmsearch.core.redact import redact
from mmsearch.core.text_template import embedded_template, template_fields
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from mmsearch.services.runtime.access import CALLER, Rule
from mmsearch.services.serving import metrics
from mmsearch.services.serving.pipeline.activation import Active
from mmsearch.services.serving.pipeline.arrange import default_collapse
from mmsearch.services.serving.errors import StageError
from mmsearch.services.serving.config.experiments import Scene
from mmsearch.services.serving.config.store import ConfigStore
from mmsearch.services.serving.outcomes.feedback import FeedbackHandler
from mmsearch.services.serving.pipeline.search import Searcher

log = logging.getLogger(__name__)

NO_DEADLINE_S = 1e6  # grpc reports a huge time_remaining when the client set no deadline
_SERVICE = "/" + retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
ACCESS_RULES = {
    f"{_SERVICE}/Search": Rule("search", "search", lambda request: request.scene),
    f"{_SERVICE}/ListScenes": Rule("search", "scenes"),
    f"{_SERVICE}/Feedback": Rule("feedback", "feedback"),  # its scene is the token's: checked once verified
}
"""What each method needs (:mod:`mmsearch.services.runtime.access`); ListScenes shows the caller's scenes only."""


def text_fields(scene: Scene, record: Mapping[str, Any]) -> list[str]:
    """The fields whose text a text scene's live version embeds (its recorded template; the writer's default
    when it records none), in the template's order; none for an image scene. Pure."""
    if scene.modality != "text":
        return []
    return list(template_fields(embedded_template(record)))


def scene_message(scene: Scene, active: Active) -> retrieval_pb2.Scene:
    """A scene as ListScenes shows it, with what its default arm serves (see the module doc). Pure."""
    name = scene.default_arm.match.collection
    rec = active.records.get(name) or {}
    message = retrieval_pb2.Scene(name=scene.name, modality=scene.modality, image_query=scene.image_query,
                                  layers=[layer.name for layer in scene.layers],
                                  collection=active.routes.get(name, name), version=str(rec.get("version") or ""),
                                  documents=int(rec.get("count") or 0), generation=int(rec.get("generation") or 0),
                                  fields=[retrieval_pb2.SceneField(name=f.name, type=f.type, operators=f.operators,
                                                                   facet=f.type in FACET_TYPES)
                                          for f in scene.fields.values()],
                                  collapse=default_collapse(scene.fields), note=scene.note,
                                  text_fields=text_fields(scene, rec))
    figures, published = rec.get("evaluation"), rec.get("published") or {}
    if figures:
        message.evaluation.CopyFrom(retrieval_pb2.IndexEvaluation(
            queries=int(figures.get("queries", 0)), k=int(figures.get("k", 0)),
            **{f: float(figures.get(f, 0.0)) for f in ("recall", "mrr", "ndcg10", "zero_hit", "p99_ms")},
            forced=bool(published.get("forced")), published_at=float(published.get("at") or 0.0)))
    return message


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, searcher: Searcher, store: ConfigStore[Active], default_deadline_s: float,
                 feedback: FeedbackHandler):
        self.searcher = searcher
        self.store = store
        self.default_deadline_s = default_deadline_s
        self.feedback = feedback

    def _deadline(self, context: grpc.aio.ServicerContext) -> float:
        remaining = context.time_remaining()
        return self.default_deadline_s if remaining is None or remaining > NO_DEADLINE_S else remaining

    def _active(self) -> Active:
        active = self.store.current
        if active is None:
            raise StageError("serving", grpc.StatusCode.UNAVAILABLE,
                             f"no experiment config is active yet: {self.store.last_error or 'loading'}")
        return active

    async def Search(self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext):
        deadline = self._deadline(context)
        scene = request.scene
        try:
            active = self._active()
            if scene not in active.scenes:
                scene = "unknown"
            response = await self.searcher.search(request, active, deadline)
        except StageError as exc:
            metrics.REQUESTS.labels(scene, exc.code.name).inc()
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                log.warning("search failed: %s: %s", exc.code.name, exc.message, extra={"scene": scene, "stage": exc.stage, "code": exc.code.name,
                                                    "error": exc.message})
            await context.abort(exc.code, clipped(redact(str(exc))))
        except Exception as exc:  # a bug outside the stages: still never UNKNOWN
            metrics.REQUESTS.labels(scene, grpc.StatusCode.UNAVAILABLE.name).inc()
            log.exception("search failed outside its stages", extra={"scene": scene})
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"serving: unexpected {type(exc).__name__}; see serving's log")
        metrics.REQUESTS.labels(scene, "OK").inc()
        return response

    async def Feedback(self, request: retrieval_pb2.FeedbackRequest, context: grpc.aio.ServicerContext):
        try:
            return await self.feedback.submit(request, self._deadline(context), CALLER.get())
        except StageError as exc:
            if exc.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
                log.warning("feedback failed: %s: %s", exc.code.name, exc.message, extra={"code": exc.code.name, "error": exc.message})
            await context.abort(exc.code, clipped(redact(str(exc))))
        except Exception as exc:  # a bug outside the handler's own checks: still never UNKNOWN
            log.exception("feedback failed unexpectedly")
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"serving: unexpected {type(exc).__name__}; see serving's log")

    async def ListScenes(self, request: retrieval_pb2.ListScenesRequest, context: grpc.aio.ServicerContext):
        try:
            active = self._active()
        except StageError as exc:
            await context.abort(exc.code, clipped(redact(str(exc))))
        caller = CALLER.get()
        return retrieval_pb2.ListScenesResponse(scenes=[scene_message(s, active) for s in active.scenes.values()
                                                        if caller is None or caller.may_touch(s.name)])


def register(servicer: RetrievalServicer):
    def add(server: grpc.aio.Server):
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
        return [retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name]

    return add
