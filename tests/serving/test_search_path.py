"""The search path's levers with small fake backends (no sockets): where text is tokenized (arm setting
``preprocess: inline | service``), which dependencies activation and health need for it, and the summary
cache keyed by collection version and generation (hits, misses, bound, invalidation, faults)."""
from __future__ import annotations

import pytest
import yaml

from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving.pipeline.activation import activate
from mmsearch.services.serving.errors import Unavailable
from mmsearch.services.serving.config.experiments import parse_config
from mmsearch.services.serving.health import probe
from mmsearch.services.serving.pipeline.routes import follow
from mmsearch.services.serving.pipeline.search import Searcher
from mmsearch.services.serving.config.settings import ServingSettings
from mmsearch.services.serving.backends.summary_cache import SummaryCache
from tests.support.fakes import (SCENE, Calls, FakeSummary, collection_manifest, fake_backends, manifest,
                                 docs_backends as backends, docs_experiments as experiments,
                                 docs_request as request)
from tests.support.metrics import sample
from tests.support.stack import t2i_config, t2t_config

SETTINGS = ServingSettings()


def service_down(b) -> None:
    async def models(timeout):
        raise Unavailable("preprocess service at 127.0.0.1:1 does not answer: UNAVAILABLE")

    b.preprocess.models = models


async def test_text_is_tokenized_inline_by_default_and_by_the_service_when_the_arm_says_so():
    b, calls = backends()
    service_down(b)  # an inline-only config needs no preprocess service
    active = await activate(experiments(), b, timeout=1.0)
    assert not active.preprocess_service and b.inline.prepared == ["m", "m"]  # both arms
    await Searcher(b, SETTINGS, down={}).search(request(), active, 1.0)
    assert b.inline.asked == ["m"] and b.preprocess.asked == []

    b, calls = backends()
    active = await activate(experiments(preprocess="service"), b, timeout=1.0)
    assert active.preprocess_service and b.inline.prepared == []
    await Searcher(b, SETTINGS, down={}).search(request(), active, 1.0)
    assert b.preprocess.asked == ["m"] and b.inline.asked == []


async def test_one_arm_on_the_service_makes_the_service_a_dependency():
    config = t2t_config(SCENE, model="m")
    config["scenes"][SCENE]["layers"][0]["arms"][1]["overrides"]["preprocess"] = "service"
    b, _ = backends()
    active = await activate(parse_config(yaml.safe_dump(config)), b, timeout=1.0)
    assert active.preprocess_service
    service_down(b)
    with pytest.raises(Unavailable, match="preprocess service"):
        await activate(parse_config(yaml.safe_dump(config)), b, timeout=1.0)
    searcher = Searcher(b, SETTINGS, down={})
    await searcher.search(request(force_arms={"ranking": "threshold"}), active, 1.0)
    await searcher.search(request(force_arms={"ranking": "control"}), active, 1.0)
    assert b.preprocess.asked == ["m"] and b.inline.asked == ["m"]


async def test_image_queries_go_to_the_service_even_when_text_is_inline():
    collections = {"pics": {**collection_manifest("t", "pics_1"),
                            "towers": {"text": {"name": "t", "onnx_sha256": "sha-a"},
                                       "image": {"name": "t-image", "onnx_sha256": "sha-a"}}}}
    b, _ = fake_backends(models={"t": manifest("t"), "t-image": manifest("t-image")}, collections=collections,
                         preprocess_models={"t-image"}, inline_models={"t"})
    active = await activate(parse_config(yaml.safe_dump(t2i_config("pics", text_model="t", image_model="t-image"))),
                            b, timeout=1.0)
    assert active.preprocess_service and set(b.inline.prepared) == {"t"}
    searcher = Searcher(b, SETTINGS, down={})
    await searcher.search(retrieval_pb2.SearchRequest(scene="pics", text="a cat"), active, 1.0)
    await searcher.search(retrieval_pb2.SearchRequest(scene="pics", image=b"\x89PNG"), active, 1.0)
    assert b.inline.asked == ["t"] and b.preprocess.asked == ["t-image"]


async def test_health_probes_the_preprocess_service_only_for_a_config_that_uses_it():
    b, _ = backends()
    service_down(b)
    inline = await activate(experiments(), b, timeout=1.0)
    assert await probe(b, inline, timeout=0.5) == {}
    assert "preprocess" in await probe(b, None, timeout=0.5)  # no config yet: the one to come may need it
    b2, _ = backends()
    service = await activate(experiments(preprocess="service"), b2, timeout=1.0)
    service_down(b2)
    assert "does not answer" in (await probe(b2, service, timeout=0.5))["preprocess"]


async def test_the_summary_lookup_names_the_concrete_collection_and_its_generation():
    b, _ = backends()
    active = await activate(experiments(), b, timeout=1.0)
    searcher = Searcher(b, SETTINGS, down={})
    await searcher.search(request(), active, 1.0)
    assert b.summary.versions == [("docs_1", 0)]
    assert await follow(active, b) is None
    b.matcher.collections[SCENE] = {**collection_manifest("m", "docs_1"), "generation": 3}  # synced in place
    synced = await follow(active, b)
    assert dict(synced.routes) == {SCENE: "docs_1"} and synced.version(SCENE) == ("docs_1", 3)
    assert active.version(SCENE) == ("docs_1", 0)  # the old Active is never changed
    assert await follow(synced, b) is None
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_2")  # a publish: new collection
    moved = await follow(synced, b)
    assert moved.version(SCENE) == ("docs_2", 0)
    await searcher.search(request(), moved, 1.0)
    assert b.summary.versions[-1] == ("docs_2", 0)
    # The alias moves to a version built by another model (refused): the served one's generation is still read.
    b.matcher.collections[SCENE] = collection_manifest("m", "docs_3", sha="other-model")
    assert await follow(moved, b) is None
    b.matcher.generations["docs_2"] = 1
    still = await follow(moved, b)
    assert dict(still.routes) == {SCENE: "docs_2"} and still.version(SCENE) == ("docs_2", 1)


def counter(name: str, collection: str) -> float:
    return sample(name, collection=collection)


async def test_cache_asks_the_store_only_for_what_it_does_not_hold():
    calls = Calls()
    store = FakeSummary(calls)
    cache = SummaryCache(store, max_documents=100)
    hits0 = counter("mmsearch_serving_summary_cache_hits_total", "db.c1")
    misses0 = counter("mmsearch_serving_summary_cache_misses_total", "db.c1")
    asked = []
    lookup = store.lookup

    async def recording(database, collection, ids, fields, timeout, **kw):
        asked.append(list(ids))
        return await lookup(database, collection, ids, fields, timeout, **kw)

    store.lookup = recording
    docs, missing = await cache.lookup("db", "c1", [3, 1, 2], ["question"], 1.0, version=("c_1", 0))
    assert [d["_id"] for d in docs] == [3, 1, 2] and missing == 0
    docs, _ = await cache.lookup("db", "c1", [2, 5, 3], ["question"], 1.0, version=("c_1", 0))
    assert [d["_id"] for d in docs] == [2, 5, 3] and asked == [[3, 1, 2], [5]]
    await cache.lookup("db", "c1", [1, 2], ["question"], 1.0, version=("c_1", 0))
    assert len(asked) == 2  # all cached: no store call
    assert counter("mmsearch_serving_summary_cache_hits_total", "db.c1") - hits0 == 4
    assert counter("mmsearch_serving_summary_cache_misses_total", "db.c1") - misses0 == 4
    # another generation, other fields, or no version: never served from what was cached
    await cache.lookup("db", "c1", [1], ["question"], 1.0, version=("c_1", 1))
    await cache.lookup("db", "c1", [1], None, 1.0, version=("c_1", 0))
    await cache.lookup("db", "c1", [1], ["question"], 1.0)
    await cache.lookup("db", "c1", [1], ["question"], 1.0)
    assert asked[2:] == [[1], [1], [1], [1]]


async def test_cache_is_bounded_least_recently_used_first_and_skips_missing_documents():
    calls = Calls()
    store = FakeSummary(calls)
    cache = SummaryCache(store, max_documents=3)
    v = ("c_1", 0)
    await cache.lookup("db", "c", [1, 2, 3], None, 1.0, version=v)
    await cache.lookup("db", "c", [1], None, 1.0, version=v)  # 1 is now the most recent
    await cache.lookup("db", "c", [4], None, 1.0, version=v)  # evicts 2
    assert len(cache) == 3
    calls.log.clear()
    await cache.lookup("db", "c", [1, 3, 4], None, 1.0, version=v)
    assert calls.log == []
    await cache.lookup("db", "c", [2], None, 1.0, version=v)
    assert [s for s, _ in calls.log] == ["summary"]

    lookup = store.lookup

    async def without_7(database, collection, ids, fields, timeout, **kw):
        docs, _ = await lookup(database, collection, ids, fields, timeout)
        docs = [None if d["_id"] == 7 else d for d in docs]
        return docs, sum(d is None for d in docs)

    store.lookup = without_7
    docs, missing = await cache.lookup("db", "c", [7, 1], None, 1.0, version=v)
    assert docs[0] is None and docs[1]["_id"] == 1 and missing == 1
    calls.log.clear()
    assert (await cache.lookup("db", "c", [7], None, 1.0, version=v))[1] == 1
    assert len(calls.log) == 1  # a missing document is asked again, never cached as missing


async def test_a_cached_page_is_served_while_the_store_is_down_and_an_uncached_one_fails():
    calls = Calls()
    cache = SummaryCache(FakeSummary(calls), max_documents=100)
    await cache.lookup("db", "c", [1, 2], None, 1.0, version=("c_1", 0))
    calls.fail["summary"] = Unavailable("the store at mongodb://x is unreachable")
    docs, _ = await cache.lookup("db", "c", [2, 1], None, 1.0, version=("c_1", 0))
    assert [d["_id"] for d in docs] == [2, 1]
    with pytest.raises(Unavailable, match="unreachable"):
        await cache.lookup("db", "c", [1, 9], None, 1.0, version=("c_1", 0))


async def test_a_zero_size_cache_passes_every_lookup_through():
    calls = Calls()
    cache = SummaryCache(FakeSummary(calls), max_documents=0)
    for _ in range(2):
        await cache.lookup("db", "c", [1], None, 1.0, version=("c_1", 0))
    assert len(calls.log) == 2 and len(cache) == 0
    with pytest.raises(ValueError, match="max_documents"):
        SummaryCache(FakeSummary(calls), max_documents=-1)


def test_the_arm_setting_is_validated_naming_its_path():
    from mmsearch.services.serving.config.experiments import ConfigError

    config = t2t_config(SCENE, model="m", preprocess="remote")
    with pytest.raises(ConfigError, match=r"preprocess: Input should be 'inline' or 'service'"):
        parse_config(yaml.safe_dump(config))


async def test_an_arm_without_match_params_searches_with_those_its_collection_recorded():
    recorded = {**collection_manifest("m", "docs_1"), "index": {"type": "IVF_FLAT", "search_params": {"nprobe": 16}}}
    b, _ = backends(collections={SCENE: recorded})
    searched = []
    search = b.matcher.search

    async def recording(collection, vector, limit, *, params, **kw):
        searched.append(params)
        return await search(collection, vector, limit, params=params, **kw)

    b.matcher.search = recording
    active = await activate(experiments(), b, timeout=1.0)
    await Searcher(b, SETTINGS, down={}).search(request(), active, 1.0)
    config = t2t_config(SCENE, model="m")
    config["scenes"][SCENE]["defaults"]["match"]["params"] = {"nprobe": 64}
    own = await activate(parse_config(yaml.safe_dump(config)), b, timeout=1.0)
    await Searcher(b, SETTINGS, down={}).search(request(), own, 1.0)
    b.matcher.collections[SCENE] = {**collection_manifest("m", "docs_2"), "index": {"search_params": {"nprobe": 8}}}
    moved = await follow(active, b)
    await Searcher(b, SETTINGS, down={}).search(request(), moved, 1.0)
    assert searched == [{"nprobe": 16}, {"nprobe": 64}, {"nprobe": 8}]
