"""The micro-batcher: concurrent requests share one inference call; padding keeps rows intact."""
import asyncio

import numpy as np

from mmsearch.services.serving.backends.batching import MicroBatcher, pad_and_stack
from mmsearch.services.serving.errors import Unavailable


def test_pad_and_stack_pads_to_longest():
    a = {"input_ids": np.array([[1, 2, 3]]), "attention_mask": np.array([[1, 1, 1]])}
    b = {"input_ids": np.array([[4]]), "attention_mask": np.array([[1]])}
    batch, counts = pad_and_stack([a, b])
    assert counts == [1, 1]
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


async def test_concurrent_requests_share_calls_and_get_their_rows():
    calls = []

    async def run(inputs):
        calls.append(inputs["x"].shape[0])
        await asyncio.sleep(0.01)
        return inputs["x"].astype(np.float32) * 2

    batcher = MicroBatcher(run, max_size=8)
    results = await asyncio.gather(*(batcher.submit({"x": np.array([[i]])}) for i in range(20)))
    await batcher.close()
    assert [r.tolist() for r in results] == [[[2.0 * i]] for i in range(20)]
    assert sum(calls) == 20 and len(calls) < 20 and max(calls) <= 8


async def test_errors_reach_every_waiter_and_batcher_keeps_working():
    fail = True

    async def run(inputs):
        if fail:
            raise Unavailable("down")
        return inputs["x"].astype(np.float32)

    batcher = MicroBatcher(run)
    results = await asyncio.gather(*(batcher.submit({"x": np.array([[1]])}) for _ in range(3)),
                                   return_exceptions=True)
    assert all(isinstance(r, Unavailable) for r in results)
    fail = False
    assert (await batcher.submit({"x": np.array([[5]])})).tolist() == [[5.0]]
    await batcher.close()


async def test_lone_request_goes_at_once_and_in_flight_bounds_concurrent_calls():
    running, peak, calls = 0, 0, []

    async def run(inputs):
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        calls.append(inputs["x"].shape[0])
        await asyncio.sleep(0.01)
        running -= 1
        return list(inputs["x"][:, 0])

    batcher = MicroBatcher(run, max_size=4, in_flight=2)
    assert await batcher.submit({"x": np.array([[7]])}) == [7] and calls == [1]
    results = await asyncio.gather(*(batcher.submit({"x": np.array([[i]])}) for i in range(15)))
    await batcher.close()
    assert results == [[i] for i in range(15)]
    assert peak == 2 and max(calls) <= 4 and sum(calls) == 16
