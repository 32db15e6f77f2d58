"""Serving's inference cache: query vectors per encoder model and version, counted in /metrics, never of
another version, on the real embedded encoder."""
import numpy as np
import pytest
from prometheus_client import REGISTRY

from mmsearch.core.model_repository import ModelRepository
from mmsearch.core.tokenizers import load_tokenizer
from mmsearch.services.serving.backends.encoders import EncoderPool
from mmsearch.services.serving.backends.inference_cache import InferenceCache, cache_key
from mmsearch.services.serving.config.settings import ServingSettings
from tests.fixtures.models import build_tiny_multilingual, export_to


def counted(kind: str, model: str) -> float:
    return REGISTRY.get_sample_value(f"mmsearch_serving_inference_cache_{kind}_total", {"model": model}) or 0.0


def one(tokenizer, text: str) -> dict[str, np.ndarray]:
    ids, mask = tokenizer.encode_one(text)
    return {"input_ids": ids, "attention_mask": mask}


def test_the_key_is_the_token_inputs_under_one_version():
    ids = {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.ones((1, 3), np.int64)}
    assert cache_key("1:a", ids) == cache_key("1:a", {k: v.astype(np.int32) for k, v in ids.items()})
    assert cache_key("1:a", ids) != cache_key("2:b", ids)
    assert cache_key("1:a", {"input_ids": np.array([[101, 8, 102]]), "attention_mask": ids["attention_mask"]}) \
        != cache_key("1:a", ids)
    assert cache_key("1:a", {k: np.repeat(v, 2, axis=0) for k, v in ids.items()}) is None  # a merged batch
    assert cache_key("1:a", {"pixel_values": np.zeros((1, 3, 4, 4), np.float32)}) is None  # an image
    with pytest.raises(ValueError, match="max_queries must be >= 0"):
        InferenceCache("m", "1:a", -1)


def test_the_lru_keeps_the_most_recent_queries_and_hands_out_copies():
    cache = InferenceCache("lru-model", "1:a", 2)
    keys = [cache_key("1:a", {"input_ids": np.array([[101, i, 102]])}) for i in range(3)]
    for i, key in enumerate(keys[:2]):
        cache.put(key, np.full((1, 4), i, np.float32))
    got = cache.get(keys[0])
    got += 100  # a caller scaling its vector in place does not change the cached one
    cache.put(keys[2], np.full((1, 4), 2, np.float32))  # evicts keys[1], the least recently used
    assert len(cache) == 2 and cache.get(keys[1]) is None
    assert np.array_equal(cache.get(keys[0]), np.zeros((1, 4), np.float32))
    with pytest.raises(ValueError, match="version '2:b' offered to the cache of 'lru-model' version '1:a'"):
        cache.put(("2:b", b""), np.zeros((1, 4), np.float32))
    assert InferenceCache("off", "1:a", 0).key({"input_ids": np.array([[101, 102]])}) is None


async def test_a_repeated_query_is_served_from_the_cache_and_counted(tiny_multilingual_repo):
    repository = ModelRepository(tiny_multilingual_repo)
    pool = EncoderPool(ServingSettings(inference_cache_queries=100), repository.folder, lambda: True)
    tokenizer = load_tokenizer(tiny_multilingual_repo / "tiny-multilingual")
    try:
        encoder = await pool.get("embedded", "tiny-multilingual")
        hits, misses = counted("hits", "tiny-multilingual"), counted("misses", "tiny-multilingual")
        first = await encoder.infer(one(tokenizer, "read a CSV file"))
        again = await encoder.infer(one(tokenizer, "READ a  CSV file "))  # the same tokens for this tokenizer
        assert np.array_equal(first, again) and first.shape == (1, 24)
        assert counted("misses", "tiny-multilingual") - misses == 1 and counted("hits", "tiny-multilingual") - hits == 1
        other = await encoder.infer(one(tokenizer, "parse JSON"))
        assert not np.allclose(other, first) and len(encoder.cache) == 2
        merged = {k: np.concatenate([one(tokenizer, "a b")[k]] * 2) for k in ("input_ids", "attention_mask")}
        assert (await encoder.infer(merged)).shape == (2, 24) and len(encoder.cache) == 2  # batches not cached
    finally:
        await pool.close()
    off = EncoderPool(ServingSettings(inference_cache_queries=0), repository.folder, lambda: True)
    try:
        assert (await off.get("embedded", "tiny-multilingual")).cache is None
    finally:
        await off.close()


async def test_a_new_model_version_never_gets_the_vectors_of_the_old_one(tiny_multilingual_source, tmp_path):
    """The same model name republished with other weights as version 2: an encoder built from it has a cache
    of its own version, and answers its own vectors for the queries the version-1 encoder cached."""
    from mmsearch.jobs.export import export_model

    repo = export_to(tiny_multilingual_source, "m", tmp_path / "repo")
    repository = ModelRepository(repo)
    settings = ServingSettings(inference_cache_queries=100)
    tokenizer = load_tokenizer(repo / "m")
    queries = [one(tokenizer, text) for text in ("read a CSV file", "parse JSON", "join paths")]
    old_pool = EncoderPool(settings, repository.folder, lambda: True)
    new_pool = EncoderPool(settings, repository.folder, lambda: True)
    try:
        old = await old_pool.get("embedded", "m")
        before = [await old.infer(q) for q in queries]
        export_model(str(build_tiny_multilingual(tmp_path / "other", seed=1)), "m", str(repo), model_version=2)
        new = await new_pool.get("embedded", "m")  # a serving started after the publish
        assert old.cache.version != new.cache.version and new.cache.version.startswith("2:")
        after = [await new.infer(q) for q in queries]
        again = [await new.infer(q) for q in queries]  # now from the new version's cache
        for b, a, g in zip(before, after, again):
            assert np.array_equal(a, g) and not np.allclose(a, b, atol=1e-3)
        for q, b in zip(queries, before):  # the old encoder keeps answering its own version's vectors
            assert np.array_equal(await old.infer(q), b)
        with pytest.raises(ValueError, match="offered to the cache"):
            new.cache.put(old.cache.key(queries[0]), before[0])
    finally:
        await old_pool.close()
        await new_pool.close()
