"""The micro-batcher: concurrent requests share one inference call; padding keeps rows intact."""
import asyncio

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from mmsearch.services.serving.backends.batching import (
    SHORT_ROWS, MicroBatcher, length_bucket, pad_and_stack, plan_calls, row_length)
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


def test_row_length_is_the_longest_row_of_any_input():
    assert row_length({"input_ids": np.zeros((1, 7)), "attention_mask": np.zeros((1, 7))}) == 7
    assert row_length({"query": np.zeros((1, 384)), "timeout": np.array([[1.0]])}) == 384
    assert row_length({"text": np.array(["a"], dtype=object)}) == 1


@given(st.integers(min_value=0, max_value=1 << 20))
def test_length_bucket_is_the_power_of_two_at_or_above_short_rows(length):
    bucket = length_bucket(length)
    assert bucket & (bucket - 1) == 0 and bucket >= max(length, 1)
    assert bucket < 2 * length or bucket == SHORT_ROWS


@given(st.lists(st.integers(min_value=0, max_value=512), max_size=64))
def test_plan_calls_never_pads_a_row_past_its_bucket(lengths):
    calls = plan_calls(lengths)
    assert sorted(i for call in calls for i in call) == list(range(len(lengths)))  # every item once
    assert all(call == sorted(call) and call for call in calls)  # arrival order within a call
    buckets = [length_bucket(lengths[call[0]]) for call in calls]
    assert buckets == sorted(set(buckets))  # one call per bucket, shortest first
    for call in calls:
        longest = max(lengths[i] for i in call)
        assert all(longest <= length_bucket(lengths[i]) for i in call)


def test_plan_calls_keeps_one_call_when_lengths_are_alike():
    assert plan_calls([8, 6, 5, 7]) == [[0, 1, 2, 3]]
    assert plan_calls([8, 256, 6, 200]) == [[0, 2], [1, 3]]
    assert plan_calls([]) == []


async def test_a_long_row_queued_with_short_ones_gets_a_call_of_its_own_after_theirs():
    widths, answered = [], []

    async def run(inputs):
        widths.append(inputs["input_ids"].shape)
        await asyncio.sleep(0)
        return inputs["input_ids"].sum(axis=1, keepdims=True).astype(np.float32)

    def row(length):
        return {"input_ids": np.ones((1, length), dtype=np.int64), "attention_mask": np.ones((1, length), dtype=np.int64)}

    async def submit(length):
        out = await batcher.submit(row(length))
        answered.append(length)
        return out

    batcher = MicroBatcher(run, max_size=32)
    results = await asyncio.gather(submit(8), submit(256), submit(5), submit(8), submit(200))
    await batcher.close()
    assert [r.tolist() for r in results] == [[[8.0]], [[256.0]], [[5.0]], [[8.0]], [[200.0]]]
    # the first went alone (fast path); what queued behind it: the short rows, then the long ones
    assert widths == [(1, 8), (2, 8), (2, 256)]
    assert answered[:3] == [8, 5, 8]
