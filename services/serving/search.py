"""One search: request -> arm -> preprocess -> embed -> match -> rank -> summary -> response.

:func:`validate_request` and :func:`choose_arm` are pure (caller mistakes
become INVALID_ARGUMENT naming the field); :class:`Searcher` runs the stages
through a :class:`~services.serving.stages.StageRunner` against injected
:class:`~services.serving.backends.Backends`.

Text queries are tokenized in serving (``preprocess: inline``, the default:
:mod:`services.serving.inline`) or by the preprocess service (``preprocess:
service``); image queries always go to the service.
Concurrent requests share backend calls: text queries for the service one
Tokenize call per preprocess model, then one inference call per encoder, then
one Milvus search per collection and search shape; a lone request is sent at
once. Image queries go one PreprocessImages call each, and the summary stays
one ``$in`` lookup per request (the page's ids not in serving's summary cache,
keyed by the collection version and generation the page came from:
:mod:`services.serving.summary_cache`): merging pages measured slower on the
embedded store, whose ``$in`` cost grows with the square of the ids (10 ids
0.9 ms, 80 ids 13 ms).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import grpc

from mmsearch.v1 import retrieval_pb2
from services.serving import bucketing, metrics
from services.serving.activation import Active, uses_service
from services.serving.backends import Backends
from services.serving.errors import Mismatch, StageError
from services.serving.experiments import ArmSpec, Scene, TowerSpec, arm_label
from services.serving.health import encoder_dependency
from services.serving.rankers import Candidates
from services.serving.settings import ServingSettings
from services.serving.stages import STAGE_WEIGHTS, StageRunner
from services.serving.summary import plain

Code = grpc.StatusCode
STAGES = tuple(STAGE_WEIGHTS)


@dataclass(frozen=True)
class Query:
    scene: Scene
    kind: str          # "text" | "image"
    top_k: int         # 0: the arm's default


def _bad(message: str) -> StageError:
    return StageError("request", Code.INVALID_ARGUMENT, message)


def validate_request(request: retrieval_pb2.SearchRequest, active: Active, settings: ServingSettings) -> Query:
    """Caller mistakes -> INVALID_ARGUMENT naming the field. Pure."""
    scene = active.scenes.get(request.scene)
    if scene is None:
        raise _bad(f"unknown scene {request.scene!r}; scenes are {sorted(active.scenes)}")
    kind = request.WhichOneof("query")
    if kind is None:
        raise _bad("give a query: text or image")
    if kind == "text":
        if not request.text.strip():
            raise _bad("text is empty; give a query text")
        if len(request.text) > settings.max_query_chars:
            raise _bad(f"text has {len(request.text)} characters; at most {settings.max_query_chars}")
        if scene.default_arm.query.text is None:
            raise _bad(f"scene {scene.name!r} does not accept text queries")
    else:
        if not request.image:
            raise _bad("image is empty; give encoded image bytes (JPEG, PNG, ...)")
        if len(request.image) > settings.max_image_bytes:
            raise _bad(f"image has {len(request.image)} bytes; at most {settings.max_image_bytes}")
        if not scene.image_query:
            raise _bad(f"scene {scene.name!r} does not accept image queries")
    if request.top_k < 0 or request.top_k > settings.max_top_k:
        raise _bad(f"top_k {request.top_k} is out of range: give 1..{settings.max_top_k}, or 0 for the arm's default")
    return Query(scene, kind, request.top_k)


@dataclass(frozen=True)
class Arm:
    assignments: tuple[tuple[str, str], ...]  # (layer, arm) per layer
    label: str
    spec: ArmSpec


def choose_arm(scene: Scene, user_id: str, force_arms: Mapping[str, str]) -> Arm:
    """The request's arm in every layer (bucketing by user id; ``force_arms`` wins). Pure."""
    try:
        combo = bucketing.assign([layer.as_tuple() for layer in scene.layers], user_id, dict(force_arms))
    except KeyError as exc:
        raise _bad(exc.args[0]) from None
    names = tuple(arm for _, arm in combo)
    return Arm(tuple(combo), arm_label(scene.layers, names), scene.arms[names])


class Searcher:
    """Runs searches against an :class:`Active` config with injected backends."""

    def __init__(self, backends: Backends, settings: ServingSettings, down: Mapping[str, str]):
        self.backends, self.settings, self.down = backends, settings, down

    async def search(self, request: retrieval_pb2.SearchRequest, active: Active,
                     deadline_s: float) -> retrieval_pb2.SearchResponse:
        load = self.backends.load
        load.in_flight += 1
        try:
            return await self._search(request, active, deadline_s)
        finally:
            load.in_flight -= 1

    async def _search(self, request: retrieval_pb2.SearchRequest, active: Active,
                      deadline_s: float) -> retrieval_pb2.SearchResponse:
        query = validate_request(request, active, self.settings)
        arm = choose_arm(query.scene, request.user_id, request.force_arms)
        spec = arm.spec
        tower: TowerSpec = spec.query.text if query.kind == "text" else spec.query.image  # type: ignore[assignment]
        top_k = query.top_k or spec.match.top_k
        rank = spec.diversify if request.diversify else spec.rank
        ranker = rank.ranker
        b = self.backends
        service = uses_service(spec, query.kind)
        dependencies = {"match": "milvus", "summary": "mongo",
                        "embed": encoder_dependency(tower.model, spec.encoder_backend)}
        if service:
            dependencies["preprocess"] = "preprocess"
        run = StageRunner(deadline_s, STAGES, scene=query.scene.name, arm=arm.label, down=self.down,
                          dependencies=dependencies)

        if query.kind == "text":
            preprocessor = b.preprocess if service else b.inline
            inputs = await run.io("preprocess", lambda t: preprocessor.text(tower.preprocess, request.text, t))
        else:
            inputs = await run.io("preprocess", lambda t: b.preprocess.image(tower.preprocess, request.image, t))
        encoder = active.encoders[(spec.encoder_backend, tower.model)]
        vector = (await run.io("embed", lambda t: encoder.infer(inputs)))[0]
        limit = max(top_k, spec.match.candidates) if ranker.needs_pool else top_k
        collection = active.routes.get(spec.match.collection, spec.match.collection)
        params = spec.match.params or active.search_params.get(spec.match.collection, {})
        matches = await run.io("match", lambda t: b.matcher.search(
            collection, vector, limit, metric=spec.match.metric, params=params,
            with_vectors=ranker.needs_vectors, timeout=t))

        def ranked():
            try:
                return ranker.fn(Candidates(matches.ids, matches.scores, matches.vectors, vector), top_k,
                                 rank.checked_params)
            except ValueError as exc:  # a ranker the arm's config cannot feed
                raise Mismatch(str(exc)) from None

        page = run.compute("rank", ranked)
        ids = [int(matches.ids[i]) for i, _ in page]
        s = spec.summary
        version = active.version(spec.match.collection)
        docs, missing = await run.io("summary", lambda t: b.summary.lookup(s.database, s.collection, ids, s.fields, t,
                                                                           version=version))
        return self._response(query.scene, arm, run, page, matches, docs, missing)

    @staticmethod
    def _response(scene: Scene, arm: Arm, run: StageRunner, page, matches, docs, missing: int):
        response = retrieval_pb2.SearchResponse(arm=arm.label, timings=run.timings, missing_summaries=missing)
        for layer, name in arm.assignments:
            response.assignments.add(layer=layer, arm=name)
            metrics.EXPOSURES.labels(scene.name, layer, name).inc()
        for (position, score), doc in zip(page, docs):
            if doc is None:
                continue
            item = response.items.add(id=int(matches.ids[position]), score=score,
                                      retrieval_score=float(matches.scores[position]))
            item.summary.update(plain({k: v for k, v in doc.items() if k != "_id"}))
        return response
