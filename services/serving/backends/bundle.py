"""The bundle of backends serving talks to, built once per process and injected everywhere.

:class:`Backends` holds the preprocess client (behind its query batcher),
the inline tokenizers (text queries of arms with ``preprocess: inline``), the
encoder pool, the Milvus matcher, the summary store (behind its cache), the
model repository's manifests and the A/B event store (impressions and
feedback, :mod:`mmsearch.services.serving.backends.event_store`; :class:`NoEvents`, which keeps
nothing, unless given). :func:`connect` builds the real ones from settings;
tests build a :class:`Backends` of small fakes with the same methods, so
activation, the stages and the route watcher run without sockets.

:class:`Load` counts the searches under way: the embedded encoder asks it
whether a query runs alone (see :class:`mmsearch.services.serving.backends.encoders.OnnxEncoder`).
"""
from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any, Hashable, Protocol, Sequence

import numpy as np

from mmsearch.core.model_repository import ModelManifest, ModelRepository
from mmsearch.services.serving.errors import Mismatch
from mmsearch.services.serving.config.settings import ServingSettings

log = logging.getLogger(__name__)
CLOSE_TIMEOUT_S = 3.0
IMPRESSION_BUFFER = 10_000
"""Impressions waiting for the event store at most; beyond, new ones are dropped and counted."""


class QueryPreprocessor(Protocol):
    async def text(self, model: str, text: str, timeout: float) -> dict[str, np.ndarray]: ...
    async def image(self, model: str, image: bytes, timeout: float) -> dict[str, np.ndarray]: ...
    async def models(self, timeout: float) -> set[str]: ...
    async def close(self) -> None: ...


class Encoders(Protocol):
    async def get(self, backend: str, model: str) -> Any: ...  # .infer(inputs) -> [1, d], .ready()
    async def close(self) -> None: ...
    # optional (the encoder pool has them: migration's Releases closes encoders no Active uses):
    # keys() -> the (backend, model) pooled; handed / handed_at(key): hand-out counts; release(key)


class Matcher(Protocol):
    async def search(self, collection: str, vector: np.ndarray, limit: int, *, metric: str, params: dict,
                     with_vectors: bool, timeout: float, expression: str = "",
                     output_fields: Sequence[str] = ()) -> Any: ...  # -> matcher.Matches
    async def text_search(self, collection: str, text: str, limit: int, *, with_vectors: bool, timeout: float,
                          expression: str = "", output_fields: Sequence[str] = ()) -> Any: ...  # BM25 -> Matches
    async def vector(self, collection: str, item: int, *, timeout: float) -> np.ndarray: ...  # NotFound
    async def manifest(self, collection: str) -> dict: ...
    async def warm(self, collection: str, manifest: dict) -> None: ...  # load it, answer a canary query
    async def ping(self, timeout: float) -> None: ...
    async def close(self) -> None: ...


class SummaryLookup(Protocol):
    async def lookup(self, database: str, collection: str, ids: Sequence[int], fields: Sequence[str] | None,
                     timeout: float, *, version: Hashable = None) -> tuple[list[dict | None], int]: ...
    # ``version``: which version of the documents (the concrete collection and its generation); a
    # cache keys on it (mmsearch.services.serving.backends.summary_cache), the store itself ignores it.
    # optional (the cache has them: the route watcher evicts what live writes changed,
    # mmsearch.services.serving.pipeline.freshness): evict(collection, ids), forget(collection), written(...)
    async def ping(self) -> None: ...
    async def close(self) -> None: ...


class EventStore(Protocol):
    enabled: bool

    def record(self, doc: dict) -> bool: ...  # buffer an impression; never blocks (False: dropped)
    async def feedback(self, doc: dict, timeout: float) -> bool: ...  # True: a duplicate
    async def run(self) -> None: ...  # drain the buffer (a background task)
    async def ping(self, timeout: float) -> None: ...  # probe the store (never raises; no health dependency)
    async def close(self) -> None: ...


class NoEvents:
    """The event store when impressions are off (``MMSEARCH_IMPRESSIONS=false``): keeps nothing."""

    enabled = False
    down = ""

    def record(self, doc: dict) -> bool:
        return False

    async def feedback(self, doc: dict, timeout: float) -> bool:
        raise Mismatch("impressions are off in this serving (MMSEARCH_IMPRESSIONS=false): no feedback is taken")

    async def run(self) -> None:
        await asyncio.Event().wait()

    async def ping(self, timeout: float) -> None:
        pass

    async def close(self) -> None:
        pass


@dataclass
class Load:
    in_flight: int = 0
    started: int = 0  # searches begun: each one's number (:meth:`begin`)
    _open: set[int] = field(default_factory=set)

    def alone(self) -> bool:
        return self.in_flight <= 1

    def begin(self) -> int:
        """Count a search in; its number, for :meth:`end`."""
        self.started += 1
        self.in_flight += 1
        self._open.add(self.started)
        return self.started

    def end(self, number: int) -> None:
        self.in_flight -= 1
        self._open.discard(number)

    def oldest(self) -> int:
        """The number of the oldest search in flight (the next one's when none is)."""
        return min(self._open, default=self.started + 1)


class Manifests:
    """Encoder manifests from the model repository, read once each (the repository Triton loads too)."""

    def __init__(self, repository: ModelRepository):
        self.repository = repository
        self._cache: dict[str, ModelManifest] = {}

    async def __call__(self, model: str) -> ModelManifest:
        if model not in self._cache:
            self._cache[model] = await asyncio.to_thread(self.repository.manifest, model)
        return self._cache[model]


@dataclass
class Backends:
    preprocess: QueryPreprocessor
    encoders: Encoders
    matcher: Matcher
    summary: SummaryLookup
    manifests: Any  # async (model) -> ModelManifest
    load: Load = field(default_factory=Load)
    events: EventStore = field(default_factory=NoEvents)
    inline: Any = None  # QueryPreprocessor with .prepare(model): text queries of preprocess: inline arms

    async def close(self, timeout: float = CLOSE_TIMEOUT_S) -> None:
        """Close every part at once, all within ``timeout`` (a part that hangs is left: stopping never
        waits on it; asyncio.wait, unlike wait_for, does not wait for a cancellation either)."""
        parts = [part for part in (self.events, self.encoders, self.preprocess, self.inline, self.summary,
                                   self.matcher) if part is not None]
        closing = {asyncio.ensure_future(part.close()): part for part in parts}
        done, _ = await asyncio.wait(closing, timeout=timeout)
        for task, part in closing.items():
            if task not in done:
                log.warning("a backend did not close in time", extra={"backend": type(part).__name__})
            elif task.exception() is not None:
                log.warning("a backend failed to close", extra={"backend": type(part).__name__,
                                                                 "error": repr(task.exception())})


def connect(settings: ServingSettings) -> Backends:
    """The real backends (clients connect lazily: serving starts while its dependencies are down)."""
    from mmsearch.services.preprocess.client import PreprocessClient
    from mmsearch.services.serving.backends.encoders import EncoderPool
    from mmsearch.services.serving.backends.event_store import MongoEvents
    from mmsearch.services.serving.backends.matcher import MilvusMatcher
    from mmsearch.services.serving.backends.inline import InlinePreprocessor
    from mmsearch.services.serving.backends.preprocessor import Preprocessor
    from mmsearch.services.serving.backends.summary import SummaryStore
    from mmsearch.services.serving.backends.summary_cache import SummaryCache

    timeout = settings.timing.dependency_timeout_seconds
    repository = ModelRepository(settings.model_repository)
    manifests = Manifests(repository)
    load = Load()
    return Backends(
        preprocess=Preprocessor(PreprocessClient(settings.preprocess_address, max_message_bytes=settings.max_message_bytes,
                                                 tls=settings.tls),
                                batch_max_size=settings.batching.max_size),
        encoders=EncoderPool(settings, repository.folder, load.alone, manifests),
        matcher=MilvusMatcher(settings.milvus_uri, token=settings.milvus_token, connect_timeout_s=timeout,
                              batch_max_size=settings.match.batch_max_size, in_flight=settings.match.in_flight),
        summary=SummaryCache(SummaryStore(settings.mongo_uri, server_selection_timeout_s=timeout),
                             settings.summary_cache_documents),
        manifests=manifests,
        load=load,
        events=(MongoEvents(settings.events_uri, settings.events.database, ttl_days=settings.events.ttl_days,
                            buffer=IMPRESSION_BUFFER, flush_s=settings.events.flush_seconds,
                            timeout_s=timeout) if settings.events.impressions else NoEvents()),
        inline=InlinePreprocessor(repository.folder),
    )
