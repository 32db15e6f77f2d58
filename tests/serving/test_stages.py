"""Serving's parts with small fake backends (no sockets): activation, stage order, the deadline split,
each stage's failure -> status mapping, alias following (warm-up before the switch), ListScenes."""
from __future__ import annotations

import re

import grpc
import pytest
import yaml

from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving.pipeline.activation import ActivationError, activate
from mmsearch.services.serving.errors import BadInput, Mismatch, StageError, Unavailable, status_for
from mmsearch.services.serving.config.store import ConfigStore
from mmsearch.services.serving.pipeline.routes import RouteWatcher, follow
from mmsearch.services.serving.pipeline.search import Searcher
from mmsearch.services.serving.service import scene_message
from mmsearch.services.serving.config.settings import ServingSettings
from tests.support.fakes import (SCENE, collection_manifest, docs_backends as backends,
                                 docs_experiments as experiments, docs_request as request, manifest)
from tests.support.stack import t2t_config

Code = grpc.StatusCode
SETTINGS = ServingSettings()


async def active_and_searcher(**kwargs):
    b, calls = backends(**kwargs)
    active = await activate(experiments(), b, timeout=1.0)
    return active, Searcher(b, SETTINGS, down={}), b, calls


async def test_activation_resolves_routes_and_keeps_them_frozen():
    active, _, _, _ = await active_and_searcher()
    assert dict(active.routes) == {SCENE: "docs_1"} and dict(active.users) == {SCENE: frozenset({"m"})}
    with pytest.raises(TypeError):
        active.routes[SCENE] = "docs_2"  # type: ignore[index]


@pytest.mark.parametrize("kwargs, preprocess, words", [
    ({"preprocess_models": set()}, "service", "preprocess model 'm' is not loaded"),
    ({"inline_models": set()}, None, "preprocess: inline: no tokenizer.json for 'm'"),
    ({"missing_encoders": {"m"}}, None, "encoder 'm' (embedded): no ONNX model"),
    ({"models": {"m": manifest("m", sha="other")}}, None, "not 'm' (onnx other)"),
    ({"collections": {SCENE: collection_manifest("x", "docs_1")}}, None, "does not match collection"),
])
async def test_activation_refuses_an_arm_naming_it(kwargs, preprocess, words):
    b, _ = backends(**kwargs)
    with pytest.raises(ActivationError, match=re.escape(words)) as caught:
        await activate(experiments(preprocess=preprocess), b, timeout=1.0)
    assert f"scene '{SCENE}' arm ranking=" in str(caught.value)


async def test_stages_run_in_order_and_share_the_deadline_by_weight():
    active, searcher, b, calls = await active_and_searcher()
    response = await searcher.search(request(user_id="u1"), active, deadline_s=1.2)
    assert [t.stage for t in response.timings] == ["preprocess", "embed", "match", "rank", "summary"]
    assert [stage for stage, _ in calls.log] == ["preprocess", "embed", "match", "summary"]
    first = calls.log[0][1]  # preprocess: weight 1 of 6, 90% to the client library
    assert first == pytest.approx(1.2 / 6 * 0.9, rel=0.05)
    timeouts = dict(calls.log)
    assert timeouts["match"] > timeouts["preprocess"]  # weight 2
    assert b.matcher.searched == ["docs_1"]  # the concrete collection behind the name
    assert [i.summary["question"] for i in response.items][:2] == ["doc 1", "doc 2"]
    assert response.arm.startswith("ranking=") and b.load.in_flight == 0


@pytest.mark.parametrize("stage", ["preprocess", "embed", "match", "summary"])
@pytest.mark.parametrize("exc, code", [
    (Unavailable("down"), Code.UNAVAILABLE), (BadInput("bad text"), Code.INVALID_ARGUMENT),
    (Mismatch("no such collection"), Code.FAILED_PRECONDITION), (TimeoutError(), Code.DEADLINE_EXCEEDED),
    (RuntimeError("Lock is not acquired"), Code.UNAVAILABLE),
])
async def test_each_stage_failure_maps_to_a_status_naming_it(stage, exc, code):
    active, searcher, _, calls = await active_and_searcher()
    calls.fail[stage] = exc
    with pytest.raises(StageError) as caught:
        await searcher.search(request(), active, deadline_s=1.0)
    assert caught.value.code == code and caught.value.stage == stage
    assert str(caught.value).startswith(f"{stage}: ")


@pytest.mark.parametrize("stage, down, code, words", [
    ("match", "milvus", Code.UNAVAILABLE, "milvus is down: connection refused"),
    # inline tokenization depends on no service: a preprocess service seen down is never blamed
    ("preprocess", "preprocess", Code.DEADLINE_EXCEEDED, "share of the deadline"),
])
async def test_a_timeout_against_a_dependency_seen_down_is_unavailable(stage, down, code, words):
    b, calls = backends()
    active = await activate(experiments(), b, timeout=1.0)
    calls.fail[stage] = TimeoutError()
    with pytest.raises(StageError) as caught:
        await Searcher(b, SETTINGS, down={down: "connection refused"}).search(request(), active, 1.0)
    assert caught.value.stage == stage and caught.value.code == code and words in caught.value.message


async def test_bad_requests_are_invalid_argument_before_any_stage():
    active, searcher, _, calls = await active_and_searcher()
    for bad, words in [(retrieval_pb2.SearchRequest(scene="nope", text="x"), "unknown scene"),
                       (request(top_k=10_000), "top_k"), (request(force_arms={"ranking": "x"}), "not an arm")]:
        with pytest.raises(StageError, match=words) as caught:
            await searcher.search(bad, active, 1.0)
        assert caught.value.code == Code.INVALID_ARGUMENT
    assert calls.log == []


async def test_follow_moves_a_route_built_by_the_same_model_and_refuses_another():
    b, calls = backends()
    active = await activate(experiments(), b, timeout=1.0)
    assert await follow(active, b) is None
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_2")
    moved = await follow(active, b)
    assert dict(moved.routes) == {SCENE: "docs_2"} and dict(active.routes) == {SCENE: "docs_1"}
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_3", sha="other-model")
    assert await follow(moved, b) is None  # refused: the old target keeps serving


async def test_follow_moves_only_after_the_new_collection_answered_its_canary():
    b, calls = backends()
    active = await activate(experiments(), b, timeout=1.0)
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_2")
    calls.fail["warm"] = Unavailable("docs_2 is still loading")
    assert await follow(active, b) is None and b.matcher.warmed == []  # the old version keeps serving
    del calls.fail["warm"]
    moved = await follow(active, b)
    assert dict(moved.routes) == {SCENE: "docs_2"} and b.matcher.warmed == ["docs_2"]


async def test_a_sync_or_a_gated_publish_refreshes_the_record_without_moving_the_route():
    b, _ = backends()
    active = await activate(experiments(), b, timeout=1.0)
    assert active.records[SCENE]["collection"] == "docs_1" and "generation" not in active.records[SCENE]
    b.matcher.collections[SCENE] = {**collection_manifest("m", "docs_1"), "generation": 3, "count": 40,
                                     "changed": {"generation": 3, "upserted": [7], "deleted": [9]}}
    fresh = await follow(active, b)
    assert dict(fresh.routes) == {SCENE: "docs_1"} and b.matcher.warmed == []
    assert fresh.records[SCENE]["generation"] == 3 and fresh.records[SCENE]["changed"]["deleted"] == [9]
    assert await follow(fresh, b) is None


async def test_list_scenes_shows_what_is_live_and_how_it_measured():
    figures = {"queries": 42, "k": 10, "recall": 0.875, "mrr": 0.75, "ndcg10": 0.8, "zero_hit": 0.05, "p99_ms": 9.5}
    b, _ = backends(collections={SCENE: {**collection_manifest("m", "docs_2"), "version": "2", "count": 120,
                                         "generation": 1, "evaluation": figures,
                                         "published": {"forced": True, "at": 1700000000.0}}})
    active = await activate(experiments(), b, timeout=1.0)
    scene = scene_message(active.scenes[SCENE], active)
    assert (scene.collection, scene.version, scene.documents, scene.generation) == ("docs_2", "2", 120, 1)
    assert scene.evaluation.recall == 0.875 and scene.evaluation.queries == 42 and scene.evaluation.forced
    assert scene.evaluation.published_at == 1700000000.0
    unmeasured = scene_message(active.scenes[SCENE], await activate(experiments(), backends()[0], timeout=1.0))
    assert unmeasured.collection == "docs_1" and not unmeasured.HasField("evaluation")


async def test_list_scenes_names_the_fields_a_live_write_embeds():
    """From the live version's recorded text template, in its order; a version recorded before templates (its
    text_field) and one that records neither (the writer's default, question) too."""
    async def fields(**state) -> list[str]:
        b, _ = backends(collections={SCENE: {**collection_manifest("m", "docs_2"), **state}})
        active = await activate(experiments(), b, timeout=1.0)
        return list(scene_message(active.scenes[SCENE], active).text_fields)

    assert await fields(text_template="{answer} ({question}) {answer}") == ["answer", "question"]
    assert await fields(text_field="answer") == ["answer"]
    assert await fields() == ["question"]


async def test_route_watcher_swaps_only_the_config_it_read(tmp_path):
    b, calls = backends()
    path = tmp_path / "experiments.yaml"
    path.write_text(yaml.safe_dump(t2t_config(SCENE, model="m")))
    store = ConfigStore(path, lambda e: activate(e, b, 1.0))
    assert await store.check()
    watcher = RouteWatcher(store, b, interval=0.01)
    first = store.current
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_2")
    assert await watcher.check() and dict(store.current.routes) == {SCENE: "docs_2"}
    assert store.current.experiments is first.experiments
    assert not store.replace(first, first)  # a stale swap (the config moved on) is refused
    calls.fail["routes"] = Unavailable("milvus down")
    assert not await watcher.check() and watcher.problem == "milvus down"


def test_an_unexpected_library_error_reaches_the_caller_without_its_text():
    """Library text (reprs, internal locations) goes to the log; the caller gets the stage and the type."""
    error = status_for("match", ValueError("cannot reshape array of size 0 into shape (0,newaxis) at /usr/lib/x.py"),
                       1.0)
    assert error.code == grpc.StatusCode.UNAVAILABLE and error.stage == "match"
    assert error.message == "unexpected ValueError from the backend; see serving's log"
