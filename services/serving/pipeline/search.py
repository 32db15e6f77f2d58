"""One search: request -> arm -> (fetch | preprocess -> embed) -> match -> rank -> summary -> response.

:func:`validate_request`, :func:`choose_arm` and :func:`plan_search` are
pure (caller mistakes become INVALID_ARGUMENT naming the field, a page token
of another index version FAILED_PRECONDITION); :class:`Searcher` runs the
stages through a :class:`~mmsearch.services.serving.pipeline.stages.StageRunner` against
injected :class:`~mmsearch.services.serving.backends.bundle.Backends`.

A query is a text, an image, or a stored item (``similar_to``: more like
this). The stages a search runs follow from the query and the arm's
retriever (:mod:`mmsearch.services.serving.pipeline.fusion`):

- text, ``dense``: preprocess, embed, match, rank, summary;
- text, ``bm25``: match (full text on the raw query), rank, summary;
- text, ``hybrid``: preprocess, embed, match (dense and BM25, fused), rank,
  summary; the BM25 search needs no vector, so it is sent before preprocess
  and runs while the query is embedded (its time is hidden behind embed);
- image: preprocess, embed, match (dense), rank, summary;
- ``similar_to``: fetch (the item's stored vector), match (dense, the item
  itself excluded), rank, summary.

Filters are compiled once (:mod:`mmsearch.services.serving.pipeline.filters`) and applied by
every retriever. Pages slice one ranked list (:mod:`mmsearch.services.serving.pipeline.pages`).
Facets count the values of keyword/bool fields over the first
``match.candidates`` matches after filters (:func:`count_facets`).

Text queries are tokenized in serving (``preprocess: inline``, the default:
:mod:`mmsearch.services.serving.backends.inline`) or by the preprocess service (``preprocess:
service``); image queries always go to the service. Concurrent requests share
backend calls: text queries for the service one Tokenize call per preprocess
model, then one inference call per encoder, then one Milvus search per
collection and search shape (unfiltered searches only); a lone request is
sent at once. Image queries go one PreprocessImages call each, and the
summary stays one ``$in`` lookup per request (the page's ids not in
serving's summary cache, keyed by the collection version and sync generation
the page came from: :mod:`mmsearch.services.serving.backends.summary_cache`): merging pages
measured slower on the embedded store, whose ``$in`` cost grows with the
square of the ids. A dense search without
match params uses those the collection's index recorded (push-milvus
``--index-type auto``).
"""
from __future__ import annotations

import asyncio
import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import grpc
import numpy as np

from mmsearch.core.errors import shown
from mmsearch.core.fields import FACET_TYPES
from mmsearch.core.milvus.names import documents_collection
from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving import metrics
from mmsearch.services.serving.config import bucketing
from mmsearch.services.serving.pipeline import pages
from mmsearch.services.serving.pipeline.arrange import Arrangement, arrange, read_arrangement
from mmsearch.services.serving.pipeline.highlights import mark
from mmsearch.services.serving.config.choices import AUTO
from mmsearch.services.serving.pipeline.activation import Active, uses_service
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.errors import Mismatch, StageError
from mmsearch.services.serving.config.experiments import ArmSpec, RankSpec, Scene, TowerSpec, arm_label
from mmsearch.services.serving.outcomes.feedback import Impressions
from mmsearch.services.serving.pipeline.filters import Condition, FilterError, expression, read_filters
from mmsearch.services.serving.pipeline.fusion import RETRIEVERS, fuse, single
from mmsearch.services.serving.backends.encoders import encoder_dependency
from mmsearch.services.serving.backends.matcher import Matches
from mmsearch.services.serving.pipeline.rankers import RANKERS, Candidates
from mmsearch.services.serving.config.settings import ServingSettings
from mmsearch.services.serving.pipeline.stages import StageRunner
from mmsearch.services.serving.backends.summary import plain

Code = grpc.StatusCode
FACET_VALUES = 20  # most values listed per facet field
SIMILAR = "similar_to"


@dataclass(frozen=True)
class Query:
    scene: Scene
    kind: str                            # "text" | "image" | "similar_to"
    top_k: int                           # 0: the arm's default
    page_size: int = 0                   # 0: top_k
    filters: tuple[Condition, ...] = ()
    expression: str = ""                 # the compiled filters
    facets: tuple[str, ...] = ()
    arrangement: Arrangement = Arrangement()  # sort and collapse (:mod:`~mmsearch.services.serving.pipeline.arrange`)

    @property
    def outputs(self) -> tuple[str, ...]:
        """The scalar fields the matcher returns: facets, sort and collapse."""
        return tuple(dict.fromkeys(self.facets + self.arrangement.fields))


def _bad(message: str) -> StageError:
    return StageError("request", Code.INVALID_ARGUMENT, message)


def validate_request(request: retrieval_pb2.SearchRequest, active: Active, settings: ServingSettings) -> Query:
    """Caller mistakes -> INVALID_ARGUMENT naming the field. Pure."""
    scene = active.scenes.get(request.scene)
    if scene is None:
        raise _bad(f"unknown scene {shown(request.scene)}; scenes are {sorted(active.scenes)}")
    kind = request.WhichOneof("query")
    if kind is None:
        raise _bad("give a query: text, image or similar_to")
    if len(request.user_id) > settings.limits.user_id_chars:
        raise _bad(f"user_id has {len(request.user_id)} characters; at most {settings.limits.user_id_chars} "
                   "(MMSEARCH_MAX_USER_ID_CHARS)")
    if kind == "text":
        if not request.text.replace("\x00", "").strip():
            raise _bad("text is empty (only spaces or NUL characters); give a query text")
        if len(request.text) > settings.limits.query_chars:
            raise _bad(f"text has {len(request.text)} characters; at most {settings.limits.query_chars}")
        if scene.default_arm.query.text is None:
            raise _bad(f"scene {scene.name!r} does not accept text queries")
    elif kind == "image":
        if not request.image:
            raise _bad("image is empty; give encoded image bytes (JPEG, PNG, ...)")
        if len(request.image) > settings.limits.image_bytes:
            raise _bad(f"image has {len(request.image)} bytes; at most {settings.limits.image_bytes}")
        if not scene.image_query:
            raise _bad(f"scene {scene.name!r} does not accept image queries")
    elif request.similar_to < 0:
        raise _bad(f"similar_to {request.similar_to} is not an item id (ids are non-negative)")
    if request.top_k < 0 or request.top_k > settings.limits.top_k:
        raise _bad(f"top_k {request.top_k} is out of range: give 1..{settings.limits.top_k}, or 0 for the arm's default")
    if request.page_size < 0 or request.page_size > settings.limits.top_k:
        raise _bad(f"page_size {request.page_size} is out of range: give 1..{settings.limits.top_k}, or 0 for top_k")
    try:
        conditions = read_filters(request.filters, scene.fields)
    except FilterError as exc:
        raise _bad(str(exc)) from None
    facets = tuple(request.facets)
    for name in facets:
        spec = scene.fields.get(name)
        if spec is None or spec.type not in FACET_TYPES:
            countable = sorted(n for n, f in scene.fields.items() if f.type in FACET_TYPES) or "none"
            why = f"is a {spec.type} field" if spec else "is not a field of the scene"
            raise _bad(f"facets: {shown(name)} {why}; facets count keyword or bool fields: {countable}")
    if len(set(facets)) != len(facets):
        raise _bad(f"facets: a field is named twice in {shown(list(facets))}")
    try:
        arrangement = read_arrangement(request.sort, request.collapse, scene.fields)
    except ValueError as exc:
        raise _bad(str(exc)) from None
    return Query(scene, kind, request.top_k, request.page_size, conditions, expression(conditions), facets,
                 arrangement)


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


@dataclass(frozen=True)
class SearchPlan:
    collection: str                 # the concrete collection searched
    retrievers: tuple[str, ...]     # "dense", "bm25"
    rank: RankSpec
    stages: tuple[str, ...]         # the I/O stages that will run (the deadline split)
    page: pages.PagePlan
    digest: str                     # what a page token of this search is bound to
    user: str                       # and the user it is bound to (a digest)
    version: tuple = ("", 0)  # (collection, sync generation): the summary cache's key
    search_params: Mapping[str, Any] = field(default_factory=dict)  # the dense search's index params
    rank_params: Mapping[str, Any] = field(default_factory=dict)  # the ranker's, a min_score: auto resolved


def plan_search(query: Query, request: retrieval_pb2.SearchRequest, arm: Arm, active: Active,
                settings: ServingSettings, page_key: bytes) -> SearchPlan:
    """Which collection, retrievers, stages and page this search runs (page token checked against
    ``page_key`` and this search's bounds before anything is fetched). Pure."""
    spec = arm.spec
    collection = active.routes.get(spec.match.collection, spec.match.collection)
    retrievers = RETRIEVERS[spec.match.retriever] if query.kind == "text" else ("dense",)
    rank = spec.diversify if request.diversify else spec.rank
    if query.kind == "text":
        what: object = request.text
    elif query.kind == "image":
        what = hashlib.sha256(request.image).hexdigest()
    else:
        what = request.similar_to
    how = query.arrangement
    digest = pages.query_digest(query.scene.name, query.kind, what, query.expression, request.diversify,
                                *((how.sort, how.descending, how.collapse) if how.active else ()))
    user = pages.query_digest(request.user_id)
    pooled = RANKERS[rank.name].needs_pool or len(retrievers) > 1 or how.active
    rank_params = rank.checked_params
    if rank_params.get("min_score") == AUTO:
        rank_params = {**rank_params, "min_score": active.cutoff(spec.match.collection)}
        if rank_params["min_score"] is None:
            raise StageError("rank", Code.FAILED_PRECONDITION, f"the arm cuts at the calibrated score (min_score: "
                             f"auto) but {collection} recorded none: run `mmsearch job evaluate "
                             "--calibrate-precision P` on it")
    depth = settings.limits.page_depth
    token = None
    if request.page_token:
        try:
            token = pages.decode(request.page_token, page_key)
            bounds = pages.pool_bounds(pooled=pooled, candidates=spec.match.candidates,
                                       max_size=min(max(settings.limits.top_k, spec.match.top_k), depth))
            pages.check(token, query=digest, user=user, collection=collection, arm=arm.label, max_depth=depth,
                        pool=bounds)
        except pages.PageTokenError as exc:
            code = Code.FAILED_PRECONDITION if exc.code == "stale" else Code.INVALID_ARGUMENT
            raise StageError("request", code, str(exc)) from None
    page = pages.plan(offset=token.offset if token else 0, size=query.page_size or query.top_k or spec.match.top_k,
                      pool=token.pool if token else 0, pooled=pooled, candidates=spec.match.candidates,
                      facets=bool(query.facets), exclude_one=query.kind == SIMILAR, max_depth=depth)
    if query.kind == SIMILAR:
        stages: tuple[str, ...] = ("fetch", "match", "summary")
    elif "dense" in retrievers:
        stages = ("preprocess", "embed", "match", "summary")
    else:
        stages = ("match", "summary")
    return SearchPlan(collection, retrievers, rank, stages, page, digest, user, active.version(spec.match.collection),
                      dict(spec.match.params) or active.search_params(spec.match.collection), rank_params)


def count_facets(matches: Matches, names: Sequence[str], counted: int) -> list[retrieval_pb2.Facet]:
    """Value counts of each field over the first ``counted`` matches, most frequent first (then by value). Pure."""
    out = []
    for name in names:
        values = matches.fields.get(name, [])[:counted]
        counts = Counter(("true" if v else "false") if isinstance(v, bool) else str(v) for v in values if v is not None)
        top = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:FACET_VALUES]
        out.append(retrieval_pb2.Facet(field=name, candidates=min(counted, len(values)),
                                       counts=[retrieval_pb2.FacetCount(value=v, count=c) for v, c in top]))
    return out


class Searcher:
    """Runs searches against an :class:`Active` config with injected backends."""

    def __init__(self, backends: Backends, settings: ServingSettings, down: Mapping[str, str],
                 impressions: Impressions | None = None):
        self.backends, self.settings, self.down = backends, settings, down
        self.impressions = impressions  # None: responses are not impressions (no id, no token)
        self.page_key = pages.signing_key(settings.page_token_secret)

    async def search(self, request: retrieval_pb2.SearchRequest, active: Active,
                     deadline_s: float) -> retrieval_pb2.SearchResponse:
        load = self.backends.load
        number = load.begin()
        try:
            return await self._search(request, active, deadline_s)
        finally:
            load.end(number)

    async def _search(self, request: retrieval_pb2.SearchRequest, active: Active,
                      deadline_s: float) -> retrieval_pb2.SearchResponse:
        query = validate_request(request, active, self.settings)
        arm = choose_arm(query.scene, request.user_id, request.force_arms)
        plan = plan_search(query, request, arm, active, self.settings, self.page_key)
        spec, page, ranker = arm.spec, plan.page, RANKERS[plan.rank.name]
        tower = active.tower(spec.match.collection, spec.query.image if query.kind == "image" else spec.query.text)
        dependencies = {"fetch": "milvus", "match": "milvus", "summary": "mongo",
                        "embed": encoder_dependency(tower.encoder, spec.encoder_backend) if tower else ""}
        if uses_service(spec, query.kind):  # inline tokenization depends on no service
            dependencies["preprocess"] = "preprocess"
        run = StageRunner(deadline_s, plan.stages, scene=query.scene.name, arm=arm.label, down=self.down,
                          dependencies=dependencies)
        b = self.backends

        ahead = None  # a hybrid text query's BM25 search: it needs no vector, so it runs while the query is embedded
        if query.kind == "text" and len(plan.retrievers) > 1:
            ahead = asyncio.ensure_future(self._bm25(query, request, plan, run.client_timeout("match")))
        try:
            vector = await self._query_vector(query, request, plan, spec, active, run, tower)
            matches = await run.io("match", lambda t: self._match(query, request, plan, spec, vector, t, ahead))
        finally:
            if ahead is not None and not ahead.done():  # the query failed before matching
                ahead.cancel()
            elif ahead is not None and not ahead.cancelled():
                ahead.exception()  # taken, so a failure the match stage never awaited is not logged as lost

        if query.kind == SIMILAR:
            matches = matches.take([i for i, item in enumerate(matches.ids.tolist()) if item != request.similar_to])
        pool = page.pool or page.offset + page.size + 1
        ranked_from = matches.take(range(min(pool, len(matches))))
        end = page.offset + page.size

        def ranked():
            try:
                picked = ranker.fn(Candidates(ranked_from.ids, ranked_from.scores, ranked_from.vectors, vector),
                                   len(ranked_from) if query.arrangement.active else end + 1, plan.rank_params)
            except ValueError as exc:  # a ranker the arm's config cannot feed
                raise Mismatch(str(exc)) from None
            return arrange(picked, ranked_from.fields, query.arrangement)

        order, folded = run.compute("rank", ranked)
        chosen = order[page.offset:end]
        ids = [int(ranked_from.ids[i]) for i, _ in chosen]
        s = spec.summary
        documents = documents_collection(s.collection, plan.collection)
        docs, missing = await run.io("summary", lambda t: b.summary.lookup(s.database, documents, ids, s.fields, t,
                                                                           version=plan.version))
        response = self._response(query.scene, arm, run, chosen, ranked_from, docs, missing, folded)
        response.offset, response.collection = page.offset, plan.collection
        if "min_score" in plan.rank_params:
            response.cutoff = plan.rank_params["min_score"]
        if request.highlight and query.kind == "text":
            mark(response.items, request.text)
        if len(order) > end and end < self.settings.limits.page_depth:
            token = pages.PageToken(end, plan.collection, arm.label, page.pool, plan.digest, plan.user)
            response.next_page_token = pages.encode(token, self.page_key)
        if query.facets:
            response.facets.extend(count_facets(matches, query.facets, page.facet_pool))
        return self._impression(request, query, arm, response)

    async def _query_vector(self, query: Query, request: retrieval_pb2.SearchRequest, plan: SearchPlan,
                            spec: ArmSpec, active: Active, run: StageRunner,
                            tower: TowerSpec | None) -> np.ndarray | None:
        """The query's vector: the stored item's (fetch), or preprocess + embed; None when no dense retriever runs."""
        b = self.backends
        if query.kind == SIMILAR:
            return await run.io("fetch", lambda t: b.matcher.vector(plan.collection, request.similar_to, timeout=t))
        if "dense" not in plan.retrievers or tower is None:
            return None
        if query.kind == "text":
            preprocessor = b.preprocess if uses_service(spec, "text") else b.inline
            inputs = await run.io("preprocess", lambda t: preprocessor.text(tower.preprocess, request.text, t))
        else:
            inputs = await run.io("preprocess", lambda t: b.preprocess.image(tower.preprocess, request.image, t))
        encoder = active.encoders[(spec.encoder_backend, tower.encoder)]
        return (await run.io("embed", lambda t: encoder.infer(inputs)))[0]

    async def _bm25(self, query: Query, request: retrieval_pb2.SearchRequest, plan: SearchPlan,
                    timeout: float) -> Matches:
        return await self.backends.matcher.text_search(
            plan.collection, request.text, plan.page.fetch, with_vectors=RANKERS[plan.rank.name].needs_vectors,
            timeout=timeout, expression=query.expression, output_fields=query.outputs)

    async def _match(self, query: Query, request: retrieval_pb2.SearchRequest, plan: SearchPlan, spec: ArmSpec,
                     vector: np.ndarray | None, timeout: float, ahead: asyncio.Future | None) -> Matches:
        """Every retriever's search (the BM25 one may be under way already), one ordered list: fused when
        several ran."""
        calls = []
        for name in plan.retrievers:
            if name == "dense":
                calls.append((name, spec.match.metric, self.backends.matcher.search(
                    plan.collection, vector, plan.page.fetch, metric=spec.match.metric, params=plan.search_params,
                    with_vectors=RANKERS[plan.rank.name].needs_vectors, timeout=timeout, expression=query.expression,
                    output_fields=query.outputs)))
            else:
                calls.append((name, "BM25", ahead if ahead is not None else self._bm25(query, request, plan, timeout)))
        if len(calls) == 1:
            return single(calls[0][0], await calls[0][2])
        results = await asyncio.gather(*(call for _, _, call in calls), return_exceptions=True)
        for result in results:
            if isinstance(result, BaseException):
                raise result
        fusion = spec.match.fusion
        return fuse([(name, metric, result) for (name, metric, _), result in zip(calls, results)],
                    fusion.name, fusion.checked_params, plan.page.fetch)

    def _impression(self, request: retrieval_pb2.SearchRequest, query: Query, arm: Arm,
                    response: retrieval_pb2.SearchResponse) -> retrieval_pb2.SearchResponse:
        """The response as an impression: its id and feedback token; the event store records it off this path."""
        if self.impressions is not None:
            layers = [(layer.name, name, layer.default) for layer, (_, name) in zip(query.scene.layers, arm.assignments)]
            response.impression_id, response.feedback_token = self.impressions.issue(
                scene=query.scene.name, label=arm.label, kind=query.kind, layers=layers, user_id=request.user_id,
                force_arms=request.force_arms, item_ids=[item.id for item in response.items])
        return response

    @staticmethod
    def _response(scene: Scene, arm: Arm, run: StageRunner, chosen, matches: Matches, docs, missing: int, folded):
        response = retrieval_pb2.SearchResponse(arm=arm.label, timings=run.timings, missing_summaries=missing)
        for layer, name in arm.assignments:
            response.assignments.add(layer=layer, arm=name)
            metrics.EXPOSURES.labels(scene.name, layer, name).inc()
        for (position, score), doc in zip(chosen, docs):
            if doc is None:
                continue
            item = response.items.add(id=int(matches.ids[position]), score=score,
                                      retrieval_score=float(matches.scores[position]), folded=folded.get(position, 0))
            for retriever, rank, found_score in matches.found_by[position] if matches.found_by else ():
                item.found_by.add(retriever=retriever, rank=rank, score=found_score)
            item.summary.update(plain({k: v for k, v in doc.items() if k != "_id"}))
        return response
