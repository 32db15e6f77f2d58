"""Which tower serves a version (pure), the search counting that tells when an old encoder may go, and which
unused encoders stay loaded for a rollback (the spare)."""
from __future__ import annotations

import pytest

from mmsearch.services.serving.backends.bundle import Load
from mmsearch.services.serving.config.experiments import TowerSpec
from mmsearch.services.serving.pipeline.activation import ConsistencyError
from mmsearch.services.serving.pipeline.activation import activate
from mmsearch.services.serving.pipeline.migration import Shadows, served, serving_tower, shadow_tokenizers, spare_after
from mmsearch.services.serving.pipeline.routes import follow
from tests.support.fakes import SCENE, collection_manifest, docs_backends, docs_experiments, manifest


def clip_record(name: str) -> dict:
    return {"name": f"{name}-image", "tower": "image", "dimension": 8, "onnx_sha256": "img",
            "towers": {"text": {"name": name, "onnx_sha256": "txt"}, "image": {"name": f"{name}-image",
                                                                             "onnx_sha256": "img"}}}


def test_the_arms_own_tower_serves_a_version_its_export_built():
    assert serving_tower("m", manifest("m"), "text", "docs", collection_manifest("m", "docs_1")) == "m"


def test_a_version_built_by_another_export_is_served_by_that_exports_tower_of_the_same_kind():
    assert serving_tower("m", manifest("m"), "text", "docs", collection_manifest("other", "docs_2")) == "other"
    record = clip_record("clip")
    assert serving_tower("m", manifest("m"), "text", "docs", record) == "clip"
    assert serving_tower("m-image", manifest("m-image"), "image", "docs", record) == "clip-image"


def test_another_copy_of_the_arms_own_model_or_no_tower_of_its_kind_is_refused():
    with pytest.raises(ConsistencyError, match="does not match collection 'docs'"):
        serving_tower("m", manifest("m"), "text", "docs", collection_manifest("m", "docs_3", sha="re-exported"))
    text_only = {"name": "t", "tower": "text", "dimension": 8, "onnx_sha256": "x"}
    with pytest.raises(ConsistencyError, match="does not match collection 'docs'"):
        serving_tower("m-image", manifest("m-image"), "image", "docs", text_only)


def test_a_tower_serving_in_place_of_the_arms_is_fp32_and_tokenized_by_itself():
    own = TowerSpec(model="m", precision="int8")
    assert served(own, own.encoder) is own
    other = served(own, "other")
    assert (other.encoder, other.preprocess, other.precision) == ("other", "other", "fp32")


def test_load_numbers_searches_and_tells_the_oldest_in_flight():
    load = Load()
    first, second = load.begin(), load.begin()
    assert (load.in_flight, load.oldest(), load.alone()) == (2, first, False)
    load.end(first)
    assert load.oldest() == second and load.alone()
    load.end(second)
    assert load.oldest() == load.started + 1 and load.in_flight == 0


async def test_the_towers_a_move_left_are_the_spare_until_the_next_move_leaves_others_or_none():
    b, _ = docs_backends(models={"m": manifest("m"), "other": manifest("other")})
    start = await activate(docs_experiments(), b, timeout=1.0)
    b.matcher.collections[SCENE] = collection_manifest("other", "docs_2")
    published = await follow(start, b)
    assert set(published.encoders) == {("embedded", "other")}
    spare = spare_after(frozenset(), start, published)
    assert spare == {("embedded", "m")}, "the publish to another model keeps the old tower"
    b.matcher.collections[SCENE] = {**collection_manifest("other", "docs_2"), "generation": 2}
    synced = await follow(published, b)
    assert dict(synced.routes) == dict(published.routes) and spare_after(spare, published, synced) == spare
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_1")
    back = await follow(synced, b)
    spare = spare_after(spare, synced, back)
    assert spare == {("embedded", "other")}, "the rollback takes the spare back and keeps the tower it left"
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_3")
    onward = await follow(back, b)
    assert spare_after(spare, back, onward) == frozenset(), "a move within one model releases the spare"


def test_a_version_of_another_model_needs_that_models_tokenizer_unless_the_service_tokenizes():
    experiments, models = docs_experiments(), {"m": manifest("m")}
    assert shadow_tokenizers(experiments, SCENE, "docs_2", collection_manifest("other", "docs_2"), models) == {"other"}
    assert shadow_tokenizers(experiments, SCENE, "docs_3", collection_manifest("m", "docs_3"), models) == set()
    copy = collection_manifest("m", "docs_4", sha="re-exported")  # another copy of the arm's model: refused anyway
    assert shadow_tokenizers(experiments, SCENE, "docs_4", copy, models) == set()
    assert shadow_tokenizers(experiments, "elsewhere", "docs_2", collection_manifest("other", "docs_2"), models) == set()
    serviced = docs_experiments(preprocess="service")
    assert shadow_tokenizers(serviced, SCENE, "docs_2", collection_manifest("other", "docs_2"), models) == set()


async def test_a_registered_version_of_another_model_has_its_tokenizer_prepared_once_before_any_publish(caplog):
    b, _ = docs_backends(models={"m": manifest("m"), "other": manifest("other"), "orphan": manifest("orphan")},
                         inline_models={"m", "other"})
    active = await activate(docs_experiments(), b, timeout=1.0)
    b.matcher.collections.update({"docs_2": collection_manifest("other", "docs_2"),
                                  "docs_3": collection_manifest("orphan", "docs_3"),
                                  "shelf_1": collection_manifest("other", "shelf_1")})
    read = []
    manifest_of = b.matcher.manifest

    async def counted(collection):
        read.append(collection)
        return await manifest_of(collection)

    b.matcher.manifest = counted
    shadows, prepared = Shadows(), list(b.inline.prepared)
    await shadows.round(active, b)
    assert b.inline.prepared == [*prepared, "other"], "the other model's tokenizer, not the orphan's it lacks"
    assert sorted(read) == ["docs_2", "docs_3"], "the served version and another scene's are not read"
    assert shadows.prepared == {"other"} and active.routes[SCENE] == "docs_1", "nothing moved"
    assert any("docs_3 was built by orphan" in r.message and "will be refused" in r.message for r in caplog.records)
    await shadows.round(active, b)
    assert len(read) == 2, "a version is read once"
    assert b.inline.prepared == [*prepared, "other"]
