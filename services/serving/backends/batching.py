"""An async micro-batcher: concurrent requests share one backend call (inference, vector search).

Concurrent requests queue, and each backend call takes everything queued (up
to ``max_size`` rows) — so a lone request pays no added wait (unless
``max_wait_s`` asks for one), and under load requests share one call.
``in_flight`` calls may run at once (each takes what queued meanwhile).

Items are mappings of arrays with a leading batch axis. Arrays of different
shapes (token sequences of different lengths) are right-padded with zeros to
the longest; with the attention mask at 0 on padding this leaves each row's
embedding unchanged (mean pooling masks padding; CLIP's text tower is causal,
so padding after the end is never attended). The backend returns one result
row per input row, as an array or a list; each request gets its own rows.

What queued together is not always one call: items are grouped by length
bucket (:func:`plan_calls`: rows up to :data:`SHORT_ROWS` together, a longer
row by the power of two at or above its length), one
backend call per bucket, shortest first, each group's waiters answered as soon
as its call returns. So a query at the tokenizer's cap never pads the short
queries queued with it to its length (an inference call's cost grows with
rows x padded length), and a row never waits for a longer bucket's call.
"""
from __future__ import annotations

import asyncio
import contextvars
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Mapping, Sequence

import numpy as np

from mmsearch.services.serving.errors import BadInput

Inputs = Mapping[str, np.ndarray]


class BatchInputError(BadInput):
    """Requests whose inputs cannot share a batch (different names or ranks)."""


def pad_and_stack(items: Sequence[Inputs]) -> tuple[dict[str, np.ndarray], list[int]]:
    """Concatenate per-request inputs along the batch axis, zero-padding other axes to the longest.

    Returns the batch and each item's row count (to split the outputs).
    """
    names = list(items[0])
    for item in items[1:]:
        if list(item) != names:
            raise BatchInputError(f"inputs differ within a batch: {names} vs {list(item)}")
    counts = [int(next(iter(item.values())).shape[0]) for item in items]
    if len(items) == 1:
        return {name: np.asarray(value) for name, value in items[0].items()}, counts
    batch = {}
    for name in names:
        arrays = [np.asarray(item[name]) for item in items]
        ndim = arrays[0].ndim
        if any(a.ndim != ndim for a in arrays):
            raise BatchInputError(f"input {name!r} has different ranks within a batch")
        target = [max(a.shape[d] for a in arrays) for d in range(1, ndim)]
        padded = []
        for a in arrays:
            pad = [(0, 0)] + [(0, t - s) for t, s in zip(target, a.shape[1:])]
            padded.append(np.pad(a, pad) if any(p[1] for p in pad) else a)
        batch[name] = np.concatenate(padded, axis=0)
    return batch, counts


def row_length(item: Inputs) -> int:
    """The most values one row of ``item`` holds in any of its inputs (a token row: its length). Pure."""
    return max((int(np.prod(np.shape(a)[1:], dtype=np.int64)) for a in item.values()), default=1)


SHORT_ROWS = 64
"""Rows up to this length share one bucket: padding them to one another costs less than a call of their own
(typical queries are 5 to 30 tokens), while a row at the tokenizer's cap (256) would multiply their cost."""


def length_bucket(length: int) -> int:
    """:data:`SHORT_ROWS` for a row up to that length, else the power of two at or above ``length``. Pure."""
    return max(SHORT_ROWS, 1 << max(int(length) - 1, 0).bit_length())


def plan_calls(lengths: Sequence[int]) -> list[list[int]]:
    """The backend calls for items of these row lengths: the indices of each length bucket together, buckets
    shortest first, arrival order within. A call pads its rows to its longest, so none is padded past its
    bucket: :data:`SHORT_ROWS`, or the next power of two of its own length. Pure."""
    groups: dict[int, list[int]] = {}
    for index, length in enumerate(lengths):
        groups.setdefault(length_bucket(length), []).append(index)
    return [groups[bucket] for bucket in sorted(groups)]


@dataclass
class _Pending:
    inputs: Inputs
    rows: int
    future: asyncio.Future


class MicroBatcher:
    """Shares backend calls among concurrent requests (see module doc).

    Fast path: when nothing is queued and a call slot is free, a request
    calls the backend itself, in its own task (no queue hand-off, which
    measured slower per stage). Requests that arrive while every slot
    is busy queue; a worker takes everything queued as soon as a slot frees.
    """

    def __init__(
        self,
        run: Callable[[dict[str, np.ndarray]], Awaitable[Any]],
        *,
        max_size: int = 32,
        max_wait_s: float = 0.0,
        in_flight: int = 1,
        on_batch: Callable[[int], None] | None = None,
    ):
        self._run = run
        self.max_size = max_size
        self.max_wait_s = max_wait_s
        self.in_flight = in_flight
        self._on_batch = on_batch
        self._queue: asyncio.Queue[_Pending] | None = None
        self._slots: asyncio.Semaphore | None = None
        self._workers: list[asyncio.Task] = []

    def _start(self) -> None:
        self._queue = asyncio.Queue()
        self._slots = asyncio.Semaphore(self.in_flight)
        # Workers run in a context of their own, not the first caller's: its trace (and anything else it set in
        # contextvars) must not reach the calls they make for later callers.
        self._workers = [asyncio.create_task(self._worker(), context=contextvars.Context())
                         for _ in range(self.in_flight)]

    async def submit(self, inputs: Inputs) -> Any:
        """The backend's result rows for ``inputs`` (batch dimension n -> n rows)."""
        if self._queue is None:
            self._start()
        assert self._queue is not None and self._slots is not None
        rows = int(next(iter(inputs.values())).shape[0])
        if self.max_wait_s == 0 and self._queue.empty() and not self._slots.locked():
            async with self._slots:
                return await self._call(dict(inputs), [rows])
        future = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Pending(inputs, rows, future))
        return await future

    async def _call(self, inputs: dict[str, np.ndarray], counts: list[int]) -> Any:
        if self._on_batch:
            self._on_batch(sum(counts))
        out = await self._run(inputs)
        if len(out) != sum(counts):
            raise RuntimeError(f"the backend returned {len(out)} rows for {sum(counts)} inputs")
        return out

    async def _collect(self, first: _Pending) -> list[_Pending]:
        """``first`` and whatever queued behind it, up to ``max_size`` rows (waiting ``max_wait_s`` at most)."""
        assert self._queue is not None
        batch = [first]
        rows = first.rows
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while rows < self.max_size:
            if not self._queue.empty():
                batch.append(self._queue.get_nowait())
            else:
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(self._queue.get(), remaining))
                except asyncio.TimeoutError:
                    break
            rows += batch[-1].rows
        return batch

    async def _worker(self) -> None:
        assert self._queue is not None and self._slots is not None
        while True:
            first = await self._queue.get()
            async with self._slots:  # what queues while waiting for a slot joins this batch
                batch = await self._collect(first)
                for call in plan_calls([row_length(p.inputs) for p in batch]):
                    await self._serve([batch[i] for i in call])

    async def _serve(self, group: list[_Pending]) -> None:
        """One backend call for ``group``; each waiter gets its rows, or the call's error."""
        group = [p for p in group if not p.future.done()]
        if not group:
            return
        try:
            inputs, counts = pad_and_stack([p.inputs for p in group])
            out = await self._call(inputs, counts)
        except Exception as exc:  # every waiter of this call gets the error
            for p in group:
                if not p.future.done():
                    p.future.set_exception(exc)
            return
        start = 0
        for p, n in zip(group, counts):
            if not p.future.done():
                p.future.set_result(out[start:start + n])
            start += n

    async def close(self) -> None:
        for task in self._workers:
            task.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers, self._queue, self._slots = [], None, None
