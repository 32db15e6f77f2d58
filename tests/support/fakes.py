"""Small in-memory backends for serving's unit tests: the same methods as the real ones, no sockets.

Each fake records what it was asked (with the timeout it was given) and can
be told to fail with a given exception, so tests check stage order, the
deadline split and each stage's failure mapping without real servers.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmsearch.core.model_repository import ModelManifest
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.errors import NotFound
from mmsearch.services.serving.backends.matcher import Matches

DIM = 4


def manifest(name: str, sha: str = "sha-a", dimension: int = DIM) -> ModelManifest:
    return ModelManifest(name=name, tower="text", dimension=dimension, onnx_sha256=sha)


def collection_manifest(model: str, concrete: str, sha: str = "sha-a", layout: dict | None = None) -> dict:
    """What the matcher reads for a collection (or alias): the recorded model, the concrete name, the layout."""
    return {"name": model, "tower": "text", "dimension": DIM, "onnx_sha256": sha,
            "towers": {"text": {"name": model, "onnx_sha256": sha}}, "collection": concrete,
            "layout": layout or {}}


@dataclass
class Calls:
    log: list[tuple[str, float]] = field(default_factory=list)  # (stage, timeout given)
    fail: dict[str, BaseException] = field(default_factory=dict)  # stage -> exception to raise

    def __call__(self, stage: str, timeout: float = 0.0) -> None:
        self.log.append((stage, timeout))
        if stage in self.fail:
            raise self.fail[stage]


class FakePreprocess:
    """The preprocess service's client, or (``inline``) serving's own tokenizers (``prepare`` refuses
    the models in ``models`` it was not given)."""

    def __init__(self, calls: Calls, models: set[str]):
        self.calls, self._models = calls, models
        self.asked: list[str] = []  # the models queries were preprocessed for
        self.prepared: list[str] = []

    async def prepare(self, model: str) -> None:
        if model not in self._models:
            raise FileNotFoundError(f"no tokenizer.json for {model!r}")
        self.prepared.append(model)

    async def text(self, model: str, text: str, timeout: float) -> dict:
        self.calls("preprocess", timeout)
        self.asked.append(model)
        return {"input_ids": np.array([[101, 7, 102]]), "attention_mask": np.ones((1, 3), np.int64)}

    async def image(self, model: str, image: bytes, timeout: float) -> dict:
        self.calls("preprocess", timeout)
        self.asked.append(model)
        return {"pixel_values": np.zeros((1, 3, 8, 8), np.float32)}

    async def models(self, timeout: float) -> set[str]:
        return set(self._models)

    async def close(self) -> None:
        pass


class FakeEncoder:
    def __init__(self, calls: Calls, name: str):
        self.calls, self.name = calls, name

    async def infer(self, inputs: dict) -> np.ndarray:
        self.calls("embed")
        return np.full((1, DIM), 0.5, np.float32)

    async def ready(self) -> bool:
        return "embed" not in self.calls.fail


class FakeEncoders:
    def __init__(self, calls: Calls, missing: set[str] = frozenset()):
        self.calls, self.missing = calls, missing

    async def get(self, backend: str, model: str) -> FakeEncoder:
        if model in self.missing:
            raise FileNotFoundError(f"no ONNX model for {model!r}")
        return FakeEncoder(self.calls, model)

    async def close(self) -> None:
        pass


class FakeMatcher:
    """Serves ``size`` items (ids 1..size, score falling with the id; field ``category`` = ``c<id % 3>``);
    BM25 finds a window in the middle, in reverse (so its list and the dense one overlap in part).
    Records each search's (retriever, collection, limit, expression)."""

    def __init__(self, calls: Calls, collections: dict[str, dict], size: int = 5):
        self.calls, self.collections, self.size = calls, collections, size  # name or alias -> collection_manifest
        self.searched: list[str] = []
        self.warmed: list[str] = []
        self.requests: list[tuple[str, str, int, str]] = []  # (retriever, collection, limit, expression)
        self.generations: dict[str, int] = {}  # concrete collection -> generation (see manifest)
        self._concrete: dict[str, dict] = {}  # concrete name -> the manifest last read through a name

    def _hits(self, ids: np.ndarray, scores: np.ndarray, with_vectors: bool, output_fields) -> Matches:
        vectors = np.eye(self.size + 1, DIM, dtype=np.float32)[ids] if with_vectors else None
        fields = {name: [f"c{i % 3}" for i in ids.tolist()] for name in output_fields}
        return Matches(ids, scores.astype(np.float32), vectors, fields)

    async def search(self, collection: str, vector, limit: int, *, metric: str, params: dict, with_vectors: bool,
                     timeout: float, expression: str = "", output_fields=()) -> Matches:
        self.calls("match", timeout)
        self.searched.append(collection)
        self.requests.append(("dense", collection, limit, expression))
        n = min(limit, self.size)
        ids = np.arange(1, n + 1, dtype=np.int64)
        return self._hits(ids, np.linspace(0.9, 0.5, n), with_vectors, output_fields)

    async def text_search(self, collection: str, text: str, limit: int, *, with_vectors: bool, timeout: float,
                          expression: str = "", output_fields=()) -> Matches:
        self.calls("match", timeout)
        self.requests.append(("bm25", collection, limit, expression))
        top = max(1, self.size * 3 // 4)
        n = min(limit, top)
        ids = np.arange(top, top - n, -1, dtype=np.int64)
        return self._hits(ids, np.linspace(9.0, 5.0, n), with_vectors, output_fields)

    async def vector(self, collection: str, item: int, *, timeout: float) -> np.ndarray:
        self.calls("fetch", timeout)
        if not 1 <= item <= self.size:
            raise NotFound(f"no item with id {item} in collection {collection!r}")
        return np.eye(self.size + 1, DIM, dtype=np.float32)[item]

    async def manifest(self, collection: str) -> dict:
        """The manifest behind a name in ``collections``; a concrete name one of them resolved to
        (as seen so far) answers with that manifest and its ``generations`` entry."""
        if "routes" in self.calls.fail:
            raise self.calls.fail["routes"]
        if collection in self.collections:
            found = dict(self.collections[collection])
            self._concrete[found.get("collection", collection)] = found
            return found
        if collection not in self._concrete:
            raise KeyError(collection)
        seen = self._concrete[collection]
        return {**seen, **({"generation": self.generations[collection]} if collection in self.generations else {})}

    async def collection_names(self, timeout: float = 1.0) -> list[str]:
        """The concrete collections of ``collections`` (a name that is no alias stands for itself)."""
        return sorted({found.get("collection", name) for name, found in self.collections.items()})

    async def warm(self, collection: str, manifest: dict) -> None:
        if "warm" in self.calls.fail:
            raise self.calls.fail["warm"]
        self.warmed.append(collection)

    async def ping(self, timeout: float) -> None:
        if "match" in self.calls.fail:
            raise self.calls.fail["match"]

    async def close(self) -> None:
        pass


class FakeSummary:
    def __init__(self, calls: Calls):
        self.calls = calls
        self.versions: list = []  # the version each lookup named

    async def lookup(self, database, collection, ids, fields, timeout, *, version=None):
        self.calls("summary", timeout)
        self.versions.append(version)
        return [{"_id": i, "question": f"doc {i}"} for i in ids], 0

    async def ping(self) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeEvents:
    """The event store in memory: impressions in ``impressions``, feedback by ``_id`` (a repeat is a duplicate);
    ``fail`` makes feedback raise it."""

    enabled = True

    def __init__(self):
        self.impressions: list[dict] = []
        self.feedback_docs: dict[str, dict] = {}
        self.fail: BaseException | None = None

    def record(self, doc: dict) -> bool:
        self.impressions.append(doc)
        return True

    async def feedback(self, doc: dict, timeout: float) -> bool:
        if self.fail is not None:
            raise self.fail
        if doc["_id"] in self.feedback_docs:
            return True
        self.feedback_docs[doc["_id"]] = doc
        return False

    async def run(self) -> None:
        pass

    async def ping(self, timeout: float) -> None:
        pass

    async def close(self) -> None:
        pass


def fake_backends(*, models: dict[str, ModelManifest], collections: dict[str, dict],
                  preprocess_models: set[str] | None = None, missing_encoders: set[str] = frozenset(),
                  items: int = 5, inline_models: set[str] | None = None):
    """(Backends of fakes, their shared :class:`Calls`); the matcher serves ``items`` items;
    ``preprocess_models`` are the models the preprocess service has, ``inline_models`` those serving
    can tokenize itself (default: all)."""
    calls = Calls()

    async def manifests(model: str) -> ModelManifest:
        return models[model]

    backends = Backends(preprocess=FakePreprocess(calls, set(models) if preprocess_models is None else preprocess_models),
                        encoders=FakeEncoders(calls, missing_encoders), matcher=FakeMatcher(calls, collections, items),
                        summary=FakeSummary(calls), manifests=manifests, events=FakeEvents(),
                        inline=FakePreprocess(calls, set(models) if inline_models is None else inline_models))
    return backends, calls


# One small scene for the unit tests of serving's parts: scene "docs", model "m", collection docs -> docs_1.
SCENE = "docs"


def docs_experiments(**overrides):
    """The parsed T2T config of scene ``docs`` with model ``m`` (``overrides``: t2t_config's keywords)."""
    import yaml

    from mmsearch.services.serving.config.experiments import parse_config
    from tests.support.stack import t2t_config

    return parse_config(yaml.safe_dump(t2t_config(SCENE, model="m", **overrides)))


def docs_backends(**kwargs):
    """:func:`fake_backends` for scene ``docs`` (model ``m``, alias ``docs`` -> ``docs_1``), overridable."""
    defaults = dict(models={"m": manifest("m")}, collections={SCENE: collection_manifest("m", "docs_1")})
    return fake_backends(**{**defaults, **kwargs})


def docs_request(**fields):
    from mmsearch.v1 import retrieval_pb2

    return retrieval_pb2.SearchRequest(scene=SCENE, text="read a csv file", **fields)
