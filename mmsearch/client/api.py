"""The client: :class:`Client` (blocking) and :class:`AsyncClient` (``asyncio``), one API.

Both have the same methods, written once in :class:`_Api`; they differ only in
how a call is made (:meth:`Client._invoke` blocks, :meth:`AsyncClient._invoke`
is a coroutine, so every ``AsyncClient`` method is awaited) and in how pages are
followed (a generator, an async generator).

Writes (upsert, delete and get by id) are not in serving's API yet; when they
are, they join :class:`_Api` as calls of their own, with their row in
:data:`mmsearch.client.calls.IDEMPOTENT`.
"""
from __future__ import annotations

import asyncio
import time
from typing import Any, AsyncIterator, Callable, Iterator

import grpc

from mmsearch.client.calls import IDEMPOTENT, feedback_request, next_page, search_request
from mmsearch.client.errors import InvalidArgument, NotFound
from mmsearch.client.results import FeedbackResult, SceneInfo, SearchPage
from mmsearch.client.transport import (MAX_MESSAGE_BYTES, Attempts, Retry, Tls, channel_options, checked_timeout,
                                       credentials_of, key_metadata)
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc

DEFAULT_TIMEOUT_S = 5.0
_LIST = retrieval_pb2.ListScenesRequest()


def _scenes(response: retrieval_pb2.ListScenesResponse) -> list[SceneInfo]:
    return [SceneInfo.of(scene) for scene in response.scenes]


def _named(name: str) -> Callable[[retrieval_pb2.ListScenesResponse], SceneInfo]:
    def pick(response: retrieval_pb2.ListScenesResponse) -> SceneInfo:
        for scene in response.scenes:
            if scene.name == name:
                return SceneInfo.of(scene)
        raise NotFound(f"no scene {name!r}; scenes are {sorted(s.name for s in response.scenes)}", field="scene")
    return pick


def _feedback(response: retrieval_pb2.FeedbackResponse) -> FeedbackResult:
    return FeedbackResult(response.impression_id, response.duplicate)


class _Api:
    """The calls (see module doc). ``timeout`` on a call overrides the client's, for that call and its
    retries together."""

    def __init__(self, target: str, *, api_key: str | None = None, tls: Tls | bool | None = None,
                 timeout: float = DEFAULT_TIMEOUT_S, retry: Retry | None = None,
                 max_message_bytes: int = MAX_MESSAGE_BYTES):
        if not isinstance(target, str) or not target:
            raise InvalidArgument("target is serving's address: host:port, dns:///name:port or ipv4:a:p,b:p",
                                  field="target")
        checked_timeout(timeout)  # now, not at the first call
        if retry is not None and not isinstance(retry, Retry):
            raise InvalidArgument(f"retry is mmsearch.client.Retry(...), not {type(retry).__name__}", field="retry")
        self.target, self.timeout, self.retry = target, timeout, retry or Retry()
        self._metadata = key_metadata(api_key)
        self._tls, self._credentials = credentials_of(tls)
        self._options = channel_options(self._tls, max_message_bytes)

    def _invoke(self, method: str, request: Any, convert: Callable, timeout: float | None) -> Any:
        raise NotImplementedError

    def search(self, scene: str, text: str | None = None, *, timeout: float | None = None, **options) -> Any:
        """One page of results for ``text``, or ``image=`` (encoded bytes), or ``similar_to=`` (a stored item's
        id). Options: ``top_k``, ``page_size``, ``page_token``, ``user_id``, ``diversify``, ``filters`` (from
        :func:`mmsearch.client.field`), ``facets`` (field names), ``force_arms``, ``sort`` (a number field,
        ``-FIELD`` descending), ``collapse`` (a keyword field), ``highlight``."""
        return self._invoke("Search", search_request(scene, text, **options), SearchPage.of, timeout)

    def similar(self, scene: str, item_id: int, *, timeout: float | None = None, **options) -> Any:
        """More like the stored item ``item_id`` (never itself in the results)."""
        return self._invoke("Search", search_request(scene, similar_to=item_id, **options), SearchPage.of, timeout)

    def scenes(self, *, timeout: float | None = None) -> Any:
        """Every scene serving has loaded (those the API key may touch)."""
        return self._invoke("ListScenes", _LIST, _scenes, timeout)

    def scene(self, name: str, *, timeout: float | None = None) -> Any:
        """One scene (NotFound naming the others when there is none of that name)."""
        return self._invoke("ListScenes", _LIST, _named(name), timeout)

    def feedback(self, feedback_token: str, item_id: int, event: str, dwell_seconds: float | None = None, *,
                 timeout: float | None = None) -> Any:
        """A click, dwell (with ``dwell_seconds``) or skip on ``item_id`` of the page whose ``feedback_token``
        it was. A repeat of the same event is counted once (``duplicate`` is True)."""
        return self._invoke("Feedback", feedback_request(feedback_token, item_id, event, dwell_seconds), _feedback,
                            timeout)

    def _attempts(self, method: str, timeout: float | None) -> Attempts:
        return Attempts(self.retry, self.timeout if timeout is None else timeout, IDEMPOTENT[method])


class Client(_Api):
    """A blocking client of serving's RetrievalService; ``with Client(...) as client:`` closes it."""

    def __init__(self, target: str, **kwargs):
        super().__init__(target, **kwargs)
        if self._credentials is None:
            self._channel = grpc.insecure_channel(target, options=self._options)
        else:
            self._channel = grpc.secure_channel(target, self._credentials, options=self._options)
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)

    def _invoke(self, method: str, request: Any, convert: Callable, timeout: float | None) -> Any:
        attempts, call = self._attempts(method, timeout), getattr(self._stub, method)
        while True:
            try:
                return convert(call(request, timeout=attempts.remaining(), metadata=self._metadata))
            except grpc.RpcError as exc:
                time.sleep(attempts.wait_after(exc))

    def pages(self, scene: str, text: str | None = None, *, timeout: float | None = None,
              **options) -> Iterator[SearchPage]:
        """Every page of a search, one call per page as it is iterated (the arguments of :meth:`search`;
        stop early with ``itertools.islice``)."""
        request = search_request(scene, text, **options)
        while request is not None:
            page = self._invoke("Search", request, SearchPage.of, timeout)
            yield page
            request = next_page(request, page)

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        self._channel.close()


class AsyncClient(_Api):
    """The ``asyncio`` client: every method is awaited, :meth:`pages` is an async iterator;
    ``async with AsyncClient(...) as client:`` closes it. Make it inside the running event loop."""

    def __init__(self, target: str, **kwargs):
        super().__init__(target, **kwargs)
        if self._credentials is None:
            self._channel = grpc.aio.insecure_channel(target, options=self._options)
        else:
            self._channel = grpc.aio.secure_channel(target, self._credentials, options=self._options)
        self._stub = retrieval_pb2_grpc.RetrievalServiceStub(self._channel)

    async def _invoke(self, method: str, request: Any, convert: Callable, timeout: float | None) -> Any:
        attempts, call = self._attempts(method, timeout), getattr(self._stub, method)
        while True:
            try:
                return convert(await call(request, timeout=attempts.remaining(), metadata=self._metadata))
            except grpc.RpcError as exc:
                await asyncio.sleep(attempts.wait_after(exc))

    async def pages(self, scene: str, text: str | None = None, *, timeout: float | None = None,
                    **options) -> AsyncIterator[SearchPage]:
        """Every page of a search, one call per page as it is iterated (the arguments of :meth:`search`)."""
        request = search_request(scene, text, **options)
        while request is not None:
            page = await self._invoke("Search", request, SearchPage.of, timeout)
            yield page
            request = next_page(request, page)

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()

    async def close(self) -> None:
        """Closes the channel; calls still running are cancelled."""
        await self._channel.close()
