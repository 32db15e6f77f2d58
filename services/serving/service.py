"""The thin gRPC servicer of RetrievalService: deadline in, search, status out."""
from __future__ import annotations

import logging

import grpc

from mmsearch.core.fields import FACET_TYPES
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from services.serving import metrics
from services.serving.activation import Active
from services.serving.errors import StageError
from services.serving.experiments import ConfigStore
from services.serving.search import Searcher

log = logging.getLogger(__name__)

NO_DEADLINE_S = 1e6  # grpc reports a huge time_remaining when the client set no deadline


class RetrievalServicer(retrieval_pb2_grpc.RetrievalServiceServicer):
    def __init__(self, searcher: Searcher, store: ConfigStore[Active], default_deadline_s: float):
        self.searcher = searcher
        self.store = store
        self.default_deadline_s = default_deadline_s

    def _active(self) -> Active:
        active = self.store.current
        if active is None:
            raise StageError("serving", grpc.StatusCode.UNAVAILABLE,
                             f"no experiment config is active yet: {self.store.last_error or 'loading'}")
        return active

    async def Search(self, request: retrieval_pb2.SearchRequest, context: grpc.aio.ServicerContext):
        remaining = context.time_remaining()
        deadline = self.default_deadline_s if remaining is None or remaining > NO_DEADLINE_S else remaining
        scene = request.scene
        try:
            active = self._active()
            if scene not in active.scenes:
                scene = "unknown"
            response = await self.searcher.search(request, active, deadline)
        except StageError as exc:
            metrics.REQUESTS.labels(scene, exc.code.name).inc()
            if exc.code != grpc.StatusCode.INVALID_ARGUMENT:
                log.warning("search failed", extra={"scene": scene, "stage": exc.stage, "code": exc.code.name,
                                                    "error": exc.message})
            await context.abort(exc.code, str(exc))
        metrics.REQUESTS.labels(scene, "OK").inc()
        return response

    async def ListScenes(self, request: retrieval_pb2.ListScenesRequest, context: grpc.aio.ServicerContext):
        try:
            active = self._active()
        except StageError as exc:
            await context.abort(exc.code, str(exc))
        return retrieval_pb2.ListScenesResponse(scenes=[
            retrieval_pb2.Scene(name=s.name, modality=s.modality, image_query=s.image_query,
                                layers=[layer.name for layer in s.layers],
                                fields=[retrieval_pb2.SceneField(name=f.name, type=f.type, operators=f.operators,
                                                                 facet=f.type in FACET_TYPES)
                                        for f in s.fields.values()])
            for s in active.scenes.values()
        ])


def register(servicer: RetrievalServicer):
    def add(server: grpc.aio.Server):
        retrieval_pb2_grpc.add_RetrievalServiceServicer_to_server(servicer, server)
        return [retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name]

    return add
