"""Query vectors kept in front of an encoder: an LRU per tower and model version.

:class:`InferenceCache` maps one query's model inputs to the vector the
encoder gave for them. :class:`~mmsearch.services.serving.backends.encoders.BatchedEncoder`
asks it before a query joins the micro-batcher and stores what the call
returned; merged batches of several queries are never looked up (a query of
one row is what serving sends).

Why it is exact:
- The key is the query as the model sees it: its token ids and attention
  mask after the tower's own tokenizer, which is the normalisation that
  matters (case folding, accents, whitespace, truncation at the tokenizer's
  cap for the towers that do them, and nothing a tower does not do). Two texts
  that tokenize alike get one vector, as the encoder would give them; no
  text normalisation of our own can fold two texts the model tells apart.
- One cache belongs to one encoder, built from one model version: the
  ``model_version`` and ``onnx_sha256`` of the manifest the encoder was made
  from, which is the one activation checked against the collection; a Triton
  encoder pins its requests to that ``model_version``. The version is part of
  every key as well, so even a cache handed to another version could not
  answer for it.

Decisions:
- The bound is a number of queries per encoder (``MMSEARCH_INFERENCE_CACHE_QUERIES``;
  0 turns the cache off). A 384-d vector and its key take about 2 KiB.
- A hit returns a copy: callers may scale or normalise the vector in place.
- Counters ``mmsearch_serving_inference_cache_hits_total`` and
  ``..._misses_total`` by model (the tower's repository name).
- Image queries are not cached (their inputs are the decoded pixels, and the
  same image rarely comes twice).
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Mapping

import numpy as np
from prometheus_client import Counter

HITS = Counter("mmsearch_serving_inference_cache_hits_total",
               "Queries whose vector came from serving's inference cache, by encoder model.", ["model"])
MISSES = Counter("mmsearch_serving_inference_cache_misses_total",
                 "Queries looked up in serving's inference cache and encoded, by encoder model.", ["model"])
TEXT_INPUTS = ("input_ids", "attention_mask")


def cache_key(version: str, inputs: Mapping[str, np.ndarray]) -> tuple | None:
    """The key of one query's token inputs under model ``version``; None for what is not cached (several
    rows, or inputs that are not token ids). Pure."""
    if set(inputs) - set(TEXT_INPUTS) or "input_ids" not in inputs:
        return None
    parts = []
    for name in TEXT_INPUTS:
        if name in inputs:
            array = np.asarray(inputs[name])
            if array.ndim != 2 or array.shape[0] != 1:
                return None
            parts.append(np.ascontiguousarray(array, dtype=np.int64).tobytes())
    return (version, *parts)


class InferenceCache:
    """An LRU of query vectors for one encoder model and version (see module doc)."""

    def __init__(self, model: str, version: str, max_queries: int):
        if max_queries < 0:
            raise ValueError(f"max_queries must be >= 0, got {max_queries}")
        self.model, self.version, self.max_queries = model, version, max_queries
        self._vectors: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._hits, self._misses = HITS.labels(model), MISSES.labels(model)

    def __len__(self) -> int:
        return len(self._vectors)

    def key(self, inputs: Mapping[str, np.ndarray]) -> tuple | None:
        """The key to look ``inputs`` up under, or None when they are not cached."""
        return cache_key(self.version, inputs) if self.max_queries else None

    def get(self, key: tuple) -> np.ndarray | None:
        """The [1, d] vector stored under ``key`` (a copy), or None; counts a hit or a miss."""
        vector = self._vectors.get(key)
        if vector is None:
            self._misses.inc()
            return None
        self._vectors.move_to_end(key)
        self._hits.inc()
        return vector.copy()

    def put(self, key: tuple, vector: np.ndarray) -> None:
        if key[0] != self.version:
            raise ValueError(f"a vector of model version {key[0]!r} offered to the cache of {self.model!r} "
                             f"version {self.version!r}")
        self._vectors[key] = np.array(vector, dtype=np.float32, copy=True)
        self._vectors.move_to_end(key)
        while len(self._vectors) > self.max_queries:
            self._vectors.popitem(last=False)
