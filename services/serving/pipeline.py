"""The retrieval pipeline: arm -> preprocess -> embed -> match -> rank -> summary.

Decisions:
- Deadline split: the request's remaining time is shared among the stages
  that do I/O by weight (:data:`STAGE_WEIGHTS`); each stage gets
  ``remaining * weight / weights of the stages still to run``, so time a
  fast stage leaves over goes to the later ones and the last stage gets all
  that is left. A stage that overruns its share fails with
  DEADLINE_EXCEEDED naming it, instead of starving the stages after it.
- Every failure is a :class:`StageError` carrying the gRPC status and the
  stage's name: UNAVAILABLE for a dependency that is down, DEADLINE_EXCEEDED,
  INVALID_ARGUMENT for the caller's mistakes (empty/oversize query, unknown
  scene, top_k out of range, undecodable image), FAILED_PRECONDITION for a
  deployment mismatch (a model or collection the config names is missing).
- Resources (preprocess channel, encoders, Milvus, MongoDB clients) are
  shared by every config version; :meth:`Pipeline.activate` builds an
  :class:`Active` config only after every arm's encoder loads, its
  preprocess model exists and its encoder matches its collection's recorded
  manifest (model/index consistency). The encoder's manifest is read from
  ``MMSEARCH_MODEL_REPOSITORY`` for either backend, so an arm on Triton
  needs that setting to name the same repository Triton loads
  (``--model-repository``). A request holds the :class:`Active` it started
  with, so a reload never disturbs it.
- Concurrent requests share backend calls (:mod:`services.serving.batching`):
  text queries one Tokenize call per preprocess model, then one inference
  call per encoder, then one Milvus search per collection and search shape;
  a lone request is sent at once, without waiting. Image queries go one
  PreprocessImages call each, and the summary stays one ``$in`` lookup per
  request (the page's ids): merging pages measured slower on the embedded
  store, whose ``$in`` cost grows with the square of the ids (10 ids 0.9 ms,
  80 ids 13 ms).
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import grpc
import numpy as np

from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc, retrieval_pb2
from services.common.codec import TensorError, from_tensor
from services.serving import bucketing, metrics
from services.serving.batching import BatchInputError, MicroBatcher
from services.serving.encoders import (
    Encoder, EncoderInputError, EncoderUnavailable, OnnxEncoder, TritonEncoder, read_manifest,
)
from services.serving.experiments import ArmSpec, Experiments, Scene, arm_label
from services.serving.matcher import MatchError, MatchUnavailable, MilvusMatcher
from services.serving.rankers import Candidates
from services.serving.settings import ServingSettings
from services.serving.summary import SummaryError, SummaryStore, SummaryTimeout, SummaryUnavailable, plain

log = logging.getLogger(__name__)

Code = grpc.StatusCode
STAGE_WEIGHTS: dict[str, float] = {"preprocess": 1.0, "embed": 2.0, "match": 2.0, "summary": 1.0}
IO_STAGES = tuple(STAGE_WEIGHTS)


class StageError(Exception):
    """A failed stage: gRPC status + a message that names the stage."""

    def __init__(self, stage: str, code: grpc.StatusCode, message: str):
        super().__init__(f"{stage}: {message}")
        self.stage, self.code, self.message = stage, code, message


class ConsistencyError(ValueError):
    """An arm's encoder is not the model that built its collection."""


def stage_budget(remaining_s: float, stage: str, stages_left: tuple[str, ...]) -> float:
    """This stage's share of the remaining deadline (see module doc). Pure."""
    total = sum(STAGE_WEIGHTS[s] for s in stages_left)
    return max(0.0, remaining_s) * STAGE_WEIGHTS[stage] / total if total else max(0.0, remaining_s)


def check_consistency(encoder: str, encoder_manifest: Mapping[str, Any], collection: str,
                      collection_manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ConsistencyError` unless ``encoder``'s model.onnx is a tower of the export that built ``collection``.

    The collection records the manifest of the document tower that encoded it;
    its ``towers`` lists every tower of that export with its ``onnx_sha256``.
    The query encoder must be one of them, byte for byte, with the same dimension.
    """
    towers = dict(collection_manifest.get("towers") or {})
    if not towers and collection_manifest.get("name"):
        towers = {collection_manifest.get("tower", "?"): {
            "name": collection_manifest["name"], "onnx_sha256": collection_manifest.get("onnx_sha256")}}
    built_by = ", ".join(f"{t.get('name')} ({kind})" for kind, t in towers.items()) or "an unrecorded model"
    entry = next((t for t in towers.values() if t.get("name") == encoder), None)
    if entry is None:
        raise ConsistencyError(
            f"encoder {encoder!r} does not match collection {collection!r}: the collection was built by the "
            f"export with towers {built_by}; use one of them or re-index with {encoder!r}"
        )
    mine, theirs = encoder_manifest.get("onnx_sha256"), entry.get("onnx_sha256")
    if not mine or mine != theirs:
        raise ConsistencyError(
            f"encoder {encoder!r} does not match collection {collection!r}: its model.onnx has sha256 "
            f"{str(mine)[:12]}… but the collection was built with {str(theirs)[:12]}…; re-export or re-index"
        )
    dim_a, dim_b = encoder_manifest.get("dimension"), collection_manifest.get("dimension")
    if dim_a and dim_b and int(dim_a) != int(dim_b):
        raise ConsistencyError(
            f"encoder {encoder!r} gives {dim_a}-dim vectors but collection {collection!r} holds {dim_b}-dim ones"
        )


@dataclass(frozen=True)
class Active:
    """A config that passed validation and activation."""

    experiments: Experiments
    encoders: Mapping[tuple[str, str], MicroBatcher]  # (backend, model) -> batcher
    # Config collection name (an mmsearch alias or a collection) -> concrete collection searched.
    # Updated in place by the health probe when `publish` moves an alias (after the consistency check).
    routes: dict[str, str]
    users: Mapping[str, frozenset[str]]  # collection name -> encoder models querying it
    loaded_at: float = field(default_factory=time.time)

    @property
    def scenes(self) -> Mapping[str, Scene]:
        return self.experiments.scenes


@dataclass
class _Query:
    scene: Scene
    kind: str          # "text" | "image"
    top_k: int         # 0: the arm's default


def validate_request(request: retrieval_pb2.SearchRequest, active: Active, settings: ServingSettings) -> _Query:
    """Caller mistakes -> INVALID_ARGUMENT naming the field. Pure."""
    def bad(message: str) -> StageError:
        return StageError("request", Code.INVALID_ARGUMENT, message)

    scene = active.scenes.get(request.scene)
    if scene is None:
        raise bad(f"unknown scene {request.scene!r}; scenes are {sorted(active.scenes)}")
    kind = request.WhichOneof("query")
    if kind is None:
        raise bad("give a query: text or image")
    if kind == "text":
        if not request.text.strip():
            raise bad("text is empty; give a query text")
        if len(request.text) > settings.max_query_chars:
            raise bad(f"text has {len(request.text)} characters; at most {settings.max_query_chars}")
        if scene.default_arm.query.text is None:
            raise bad(f"scene {scene.name!r} does not accept text queries")
    else:
        if not request.image:
            raise bad("image is empty; give encoded image bytes (JPEG, PNG, ...)")
        if len(request.image) > settings.max_image_bytes:
            raise bad(f"image has {len(request.image)} bytes; at most {settings.max_image_bytes}")
        if not scene.image_query:
            raise bad(f"scene {scene.name!r} does not accept image queries")
    if request.top_k < 0 or request.top_k > settings.max_top_k:
        raise bad(f"top_k {request.top_k} is out of range: give 1..{settings.max_top_k}, or 0 for the arm's default")
    return _Query(scene, kind, request.top_k)


class Pipeline:
    """Owns the dependency clients and runs searches against an :class:`Active` config."""

    PREPROCESS_CHANNEL_OPTIONS = [
        ("grpc.initial_reconnect_backoff_ms", 100),
        ("grpc.min_reconnect_backoff_ms", 100),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]

    def __init__(self, settings: ServingSettings):
        self.settings = settings
        options = [
            *self.PREPROCESS_CHANNEL_OPTIONS,
            ("grpc.max_receive_message_length", settings.max_message_bytes),
            ("grpc.max_send_message_length", settings.max_message_bytes),
        ]
        # One channel for the process: requests multiplex over it.
        self._channel = grpc.aio.insecure_channel(settings.preprocess_address, options=options)
        self._preprocess = preprocess_pb2_grpc.PreprocessServiceStub(self._channel)
        self.matcher = MilvusMatcher(settings.milvus_uri, token=settings.milvus_token,
                                     connect_timeout_s=settings.dependency_timeout_ms / 1000,
                                     batch_max_size=settings.match_batch_max_size, in_flight=settings.match_in_flight)
        self.summary = SummaryStore(settings.mongo_uri, server_selection_timeout_s=settings.dependency_timeout_ms / 1000)
        self._encoders: dict[tuple[str, str], tuple[Encoder, MicroBatcher]] = {}
        self._manifests: dict[str, dict] = {}
        self._tokenizers: dict[str, MicroBatcher] = {}  # preprocess model -> batcher of Tokenize calls
        self.down: dict[str, str] = {}  # dependency -> problem, from the last health probe
        self.in_flight = 0  # searches under way (the embedded encoder's "alone" test)

    # ---- activation -------------------------------------------------------------------------
    async def _encoder(self, backend: str, model: str) -> MicroBatcher:
        key = (backend, model)
        if key not in self._encoders:
            s = self.settings
            if backend == "triton":
                if not s.triton_address:
                    raise ValueError(f"encoder {model!r} uses backend triton but MMSEARCH_TRITON_ADDRESS is empty")
                encoder: Encoder = TritonEncoder(s.triton_address, model, timeout_s=s.encoder_timeout_ms / 1000)
                if not await encoder.ready():
                    await encoder.close()
                    raise EncoderUnavailable(f"Triton at {s.triton_address} does not have model {model!r} ready")
            else:
                encoder = await asyncio.to_thread(
                    OnnxEncoder, s.model_repository, model, intra_op_threads=s.onnx_intra_op_threads,
                    concurrency=s.batch_in_flight, allow_spinning=s.onnx_allow_spinning,
                    single_query_threads=s.onnx_single_query_threads, alone=lambda: self.in_flight <= 1)
            hist = metrics.BATCH_SIZE.labels("embed", model)
            batcher = MicroBatcher(encoder.infer, max_size=s.batch_max_size, max_wait_s=s.batch_max_wait_ms / 1000,
                                   in_flight=s.batch_in_flight, on_batch=hist.observe)
            self._encoders[key] = (encoder, batcher)
        return self._encoders[key][1]

    async def _encoder_manifest(self, model: str) -> dict:
        if model not in self._manifests:
            self._manifests[model] = await asyncio.to_thread(read_manifest, self.settings.model_repository, model)
        return self._manifests[model]

    async def activate(self, experiments: Experiments) -> Active:
        """Load encoders and check every arm against its dependencies; raise to refuse the config."""
        timeout = self.settings.dependency_timeout_ms / 1000
        models = await self._preprocess_models(timeout)
        encoders: dict[tuple[str, str], MicroBatcher] = {}
        collection_manifests: dict[str, dict] = {}
        checked: set[tuple[str, str]] = set()
        users: dict[str, set[str]] = {}
        for scene, label, spec in experiments.arm_specs():
            where = f"scene {scene!r} arm {label}"
            for tower in (spec.query.text, spec.query.image):
                if tower is None:
                    continue
                if tower.preprocess not in models:
                    raise ValueError(f"{where}: preprocess model {tower.preprocess!r} is not loaded by the "
                                     f"preprocess service (it has {sorted(models)})")
                try:
                    encoders[(spec.encoder_backend, tower.model)] = await self._encoder(spec.encoder_backend, tower.model)
                except Exception as exc:
                    raise ValueError(f"{where}: encoder {tower.model!r} ({spec.encoder_backend}): {exc}") from None
                users.setdefault(spec.match.collection, set()).add(tower.model)
                pair = (tower.model, spec.match.collection)
                if pair in checked:
                    continue
                if spec.match.collection not in collection_manifests:
                    collection_manifests[spec.match.collection] = await self.matcher.manifest(spec.match.collection)
                try:
                    check_consistency(tower.model, await self._encoder_manifest(tower.model),
                                      spec.match.collection, collection_manifests[spec.match.collection])
                except ConsistencyError as exc:
                    raise ConsistencyError(f"{where}: {exc}") from None
                checked.add(pair)
        routes = {name: m.get("collection", name) for name, m in collection_manifests.items()}
        return Active(experiments, encoders, routes, {k: frozenset(v) for k, v in users.items()})

    async def refresh_routes(self, active: Active) -> None:
        """Follow alias moves (``publish``): re-read each collection's manifest, switch after the consistency check.

        Raises when Milvus does not answer (the health probe reports it). A new
        target built by another model is refused (logged) and the old one kept.
        """
        for name, current in list(active.routes.items()):
            manifest = await self.matcher.manifest(name)
            target = manifest.get("collection", name)
            if target == current:
                continue
            try:
                for model in active.users.get(name, ()):
                    check_consistency(model, await self._encoder_manifest(model), name, manifest)
            except ConsistencyError as exc:
                log.error("not following %s -> %s: %s", name, target, exc)
                continue
            log.info("collection %s now resolves to %s", name, target)
            active.routes[name] = target

    async def _preprocess_models(self, timeout: float) -> set[str]:
        try:
            response = await self._preprocess.ListModels(preprocess_pb2.ListModelsRequest(), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise EncoderUnavailable(
                f"preprocess service at {self.settings.preprocess_address} does not answer: {exc.code().name}"
            ) from None
        return {m.name for m in response.models}

    # ---- health -----------------------------------------------------------------------------
    async def probe(self, active: Active | None) -> dict[str, str]:
        """Dependency name -> problem, for every dependency that does not answer (empty: all healthy)."""
        timeout = self.settings.dependency_timeout_ms / 1000
        problems: dict[str, str] = {}

        async def check(name: str, coro) -> None:
            try:
                result = await asyncio.wait_for(coro, timeout * 2)
                if result is False:
                    problems[name] = "not ready"
            except Exception as exc:
                problems[name] = str(exc) or type(exc).__name__

        checks = [check("preprocess", self._preprocess_models(timeout)),
                  check("milvus", self.refresh_routes(active) if active else self.matcher.ping(timeout=timeout)),
                  check("mongo", self.summary.ping())]
        if active is not None:
            for (backend, model), _ in active.encoders.items():
                encoder = self._encoders[(backend, model)][0]
                checks.append(check(f"encoder {model} ({backend})", encoder.ready()))
        await asyncio.gather(*checks)
        self.down = problems
        return problems

    # ---- search -----------------------------------------------------------------------------
    async def search(self, request: retrieval_pb2.SearchRequest, active: Active,
                     deadline_s: float) -> retrieval_pb2.SearchResponse:
        self.in_flight += 1
        try:
            return await self._search(request, active, deadline_s)
        finally:
            self.in_flight -= 1

    async def _search(self, request: retrieval_pb2.SearchRequest, active: Active,
                      deadline_s: float) -> retrieval_pb2.SearchResponse:
        start = time.perf_counter()
        end = start + deadline_s
        query = validate_request(request, active, self.settings)
        scene = query.scene
        try:
            combo = bucketing.assign([layer.as_tuple() for layer in scene.layers], request.user_id,
                                     dict(request.force_arms))
        except KeyError as exc:
            raise StageError("request", Code.INVALID_ARGUMENT, exc.args[0]) from None
        names = tuple(arm for _, arm in combo)
        spec = scene.arms[names]
        label = arm_label(scene.layers, names)
        tower = spec.query.text if query.kind == "text" else spec.query.image
        if tower is None:
            raise StageError("request", Code.INVALID_ARGUMENT, f"arm {label} of scene {scene.name!r} does not take {query.kind} queries")
        top_k = query.top_k or spec.match.top_k
        rank_spec = spec.diversify if request.diversify else spec.rank
        ranker = rank_spec.ranker

        timings: list[retrieval_pb2.StageTiming] = []
        left = list(IO_STAGES)

        dependency = {"preprocess": "preprocess", "match": "milvus", "summary": "mongo",
                      "embed": f"encoder {tower.model} ({spec.encoder_backend})"}

        async def run(stage: str, coro_fn: Callable[[float], Any]):
            budget = stage_budget(end - time.perf_counter(), stage, tuple(left))
            left.remove(stage)
            t0 = time.perf_counter()
            try:
                if budget <= 0:
                    raise asyncio.TimeoutError
                # The client library gets 90% of the share, so its own error (naming the cause) comes first.
                async with asyncio.timeout(budget):  # no extra task per stage, unlike wait_for
                    return await coro_fn(budget * 0.9)
            except asyncio.TimeoutError:
                problem = self.down.get(dependency[stage])
                if problem:  # a timeout while the health probe sees the dependency down: it is down
                    raise StageError(stage, Code.UNAVAILABLE, f"{dependency[stage]} is down: {problem}") from None
                raise StageError(stage, Code.DEADLINE_EXCEEDED,
                                 f"no answer within its {budget * 1000:.0f} ms share of the deadline") from None
            finally:
                elapsed = time.perf_counter() - t0
                timings.append(retrieval_pb2.StageTiming(stage=stage, ms=elapsed * 1000))
                metrics.STAGE_LATENCY.labels(stage, scene.name, label).observe(elapsed)

        inputs = await run("preprocess", lambda b: self._run_preprocess(tower.preprocess, request, query.kind, b))
        batcher = active.encoders[(spec.encoder_backend, tower.model)]
        vector = await run("embed", lambda b: self._run_embed(batcher, inputs))
        limit = max(top_k, spec.match.candidates) if ranker.needs_pool else top_k
        matches = await run("match", lambda b: self._run_match(active, spec, vector, limit, ranker.needs_vectors, b))

        t0 = time.perf_counter()
        try:
            ranked = ranker.fn(Candidates(matches.ids, matches.scores, matches.vectors, vector), top_k,
                               rank_spec.checked_params)
        except ValueError as exc:
            raise StageError("rank", Code.FAILED_PRECONDITION, str(exc)) from None
        elapsed = time.perf_counter() - t0
        timings.append(retrieval_pb2.StageTiming(stage="rank", ms=elapsed * 1000))
        metrics.STAGE_LATENCY.labels("rank", scene.name, label).observe(elapsed)

        page_ids = [int(matches.ids[i]) for i, _ in ranked]
        docs, missing = await run("summary", lambda b: self._run_summary(spec, page_ids, b))

        response = retrieval_pb2.SearchResponse(arm=label, timings=timings, missing_summaries=missing)
        for (layer, arm) in combo:
            response.assignments.add(layer=layer, arm=arm)
            metrics.EXPOSURES.labels(scene.name, layer, arm).inc()
        for (position, score), doc in zip(ranked, docs):
            if doc is None:
                continue
            item = response.items.add(id=int(matches.ids[position]), score=score,
                                      retrieval_score=float(matches.scores[position]))
            item.summary.update(plain({k: v for k, v in doc.items() if k != "_id"}))
        return response

    def _tokenizer(self, model: str) -> MicroBatcher:
        """The batcher of Tokenize calls for ``model``: concurrent text queries share one gRPC call."""
        batcher = self._tokenizers.get(model)
        if batcher is None:
            async def run(inputs: dict[str, np.ndarray]) -> list:
                texts = [str(t) for t in inputs["text"]]
                timeout = float(inputs["timeout"].max())
                try:
                    return self._token_rows(await self._tokenize(model, texts, timeout), len(texts))
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != Code.INVALID_ARGUMENT or len(texts) == 1:
                        raise
                # One text of the batch was refused: each on its own, so only that request fails.
                results = await asyncio.gather(*(self._tokenize(model, [t], timeout) for t in texts),
                                               return_exceptions=True)
                return [r if isinstance(r, BaseException) else self._token_rows(r, 1)[0] for r in results]

            batcher = self._tokenizers[model] = MicroBatcher(
                run, max_size=self.settings.batch_max_size, on_batch=metrics.BATCH_SIZE.labels("preprocess", model).observe)
        return batcher

    async def _tokenize(self, model: str, texts: list[str], timeout: float):
        return await self._preprocess.Tokenize(preprocess_pb2.TokenizeRequest(model=model, texts=texts),
                                               timeout=timeout)

    @staticmethod
    def _token_rows(response, n: int) -> list[dict[str, np.ndarray]]:
        """One {input_ids, attention_mask} per text, each cut to its own tokens (trailing padding dropped)."""
        ids = from_tensor(response.input_ids, "input_ids")
        mask = from_tensor(response.attention_mask, "attention_mask")
        if ids.shape[0] != n or mask.shape != ids.shape:
            raise TensorError(f"Tokenize answered shapes {ids.shape}/{mask.shape} for {n} texts")
        rows = []
        for i in range(n):
            attended = np.flatnonzero(mask[i])
            end = int(attended[-1]) + 1 if attended.size else ids.shape[1]
            rows.append({"input_ids": ids[i:i + 1, :end], "attention_mask": mask[i:i + 1, :end]})
        return rows

    async def _run_preprocess(self, model: str, request: retrieval_pb2.SearchRequest, kind: str,
                              budget: float) -> dict[str, np.ndarray]:
        """Text: through the model's Tokenize batcher; image: one PreprocessImages call."""
        try:
            if kind == "text":
                row = (await self._tokenizer(model).submit(
                    {"text": np.array([request.text], dtype=object), "timeout": np.array([[budget]])}))[0]
                if isinstance(row, BaseException):
                    raise row
                return row
            r = await self._preprocess.PreprocessImages(
                preprocess_pb2.PreprocessImagesRequest(model=model, images=[request.image]), timeout=budget)
            return {"pixel_values": from_tensor(r.pixel_values, "pixel_values")}
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == Code.INVALID_ARGUMENT:
                raise StageError("preprocess", Code.INVALID_ARGUMENT, exc.details() or "bad query") from None
            if code == Code.DEADLINE_EXCEEDED:
                raise StageError("preprocess", Code.DEADLINE_EXCEEDED,
                                 f"no answer within its {budget * 1000:.0f} ms share of the deadline") from None
            if code in (Code.NOT_FOUND, Code.FAILED_PRECONDITION):
                raise StageError("preprocess", Code.FAILED_PRECONDITION, exc.details() or code.name) from None
            raise StageError("preprocess", Code.UNAVAILABLE,
                             f"preprocess service at {self.settings.preprocess_address}: {code.name}: "
                             f"{exc.details()}") from None
        except TensorError as exc:
            raise StageError("preprocess", Code.UNAVAILABLE, f"undecodable answer: {exc}") from None

    async def _run_embed(self, batcher: MicroBatcher, inputs: dict[str, np.ndarray]) -> np.ndarray:
        try:
            out = await batcher.submit(inputs)
        except EncoderUnavailable as exc:
            raise StageError("embed", Code.UNAVAILABLE, str(exc)) from None
        except (EncoderInputError, BatchInputError) as exc:
            raise StageError("embed", Code.INVALID_ARGUMENT, str(exc)) from None
        except Exception as exc:  # onnxruntime errors: a model/input mismatch of the deployment
            raise StageError("embed", Code.FAILED_PRECONDITION, f"{type(exc).__name__}: {exc}") from None
        return np.asarray(out[0], dtype=np.float32)

    async def _run_match(self, active: Active, spec: ArmSpec, vector: np.ndarray, limit: int, with_vectors: bool,
                         budget: float):
        try:
            collection = active.routes.get(spec.match.collection, spec.match.collection)
            return await self.matcher.search(collection, vector, limit, metric=spec.match.metric,
                                             params=spec.match.params, with_vectors=with_vectors, timeout=budget)
        except MatchUnavailable as exc:
            raise StageError("match", Code.UNAVAILABLE, str(exc)) from None
        except MatchError as exc:
            raise StageError("match", Code.FAILED_PRECONDITION, str(exc)) from None

    async def _run_summary(self, spec: ArmSpec, ids: list[int], budget: float):
        s = spec.summary
        try:
            return await self.summary.lookup(s.database, s.collection, ids, s.fields, budget)
        except SummaryUnavailable as exc:
            raise StageError("summary", Code.UNAVAILABLE, str(exc)) from None
        except SummaryTimeout as exc:
            raise StageError("summary", Code.DEADLINE_EXCEEDED, str(exc)) from None
        except SummaryError as exc:
            raise StageError("summary", Code.FAILED_PRECONDITION, str(exc)) from None

    async def close(self) -> None:
        for encoder, batcher in self._encoders.values():
            await batcher.close()
            await encoder.close()
        self._encoders.clear()
        for batcher in self._tokenizers.values():
            await batcher.close()
        self._tokenizers.clear()
        await self._channel.close()
        await self.summary.close()
        await self.matcher.close()
