"""Serving's MongoDB-wire clients (the summary store, the event store's feedback) against a real
secantusd that crashes: they never jam.

Once, with searches running, ``kill -9`` of the store then a restart on the same port and data
left serving jammed for good in 2 of 3 trials. The cause: the stage's ``asyncio.timeout`` and the
RPC's own cancellation at the client's deadline cancel pymongo while its Python 3.11
``wait_for(condition.wait())`` handles its own timeout, which leaves the topology lock held; every
later lookup then waits forever and ``close()`` hangs (so SIGTERM did not stop serving). This
reproduces that composition: lookups run through the StageRunner with a deadline, and the task
running each is cancelled at that same deadline, as grpc.aio cancels a handler whose client gave up.
"""
from __future__ import annotations

import asyncio
import random

import pytest

from mmsearch.dev.mongo import start_mongo
from mmsearch.dev.processes import free_port
from mmsearch.services.serving.errors import StageError
from mmsearch.services.serving.backends.event_store import MongoEvents
from mmsearch.services.serving.pipeline.stages import StageRunner
from mmsearch.services.serving.backends.summary import SummaryStore
from tests.support.loops import eventually_async

pytestmark = pytest.mark.slow

ROUNDS, CONCURRENCY = 25, 8


def lookup(store: SummaryStore):
    return lambda t: store.lookup("mmsearch", "docs", [1, 2], None, t)


def feedback(store: MongoEvents):
    return lambda t: store.feedback({"_id": f"fb-{random.random()}", "event": "click"}, t)


STORES = {"summary": (lambda uri: SummaryStore(uri, server_selection_timeout_s=1.0), lookup),
          "feedback": (lambda uri: MongoEvents(uri, "events", ttl_days=1, buffer=10, timeout_s=1.0), feedback)}


async def under_deadline(call, deadline: float) -> str:
    """One stage running ``call(timeout)`` under a deadline, cancelled from outside at that deadline too."""
    async def stage():
        run = StageRunner(deadline, ("summary",), scene="s", arm="a", dependencies={}, down={})
        await run.io("summary", call)

    task = asyncio.create_task(stage())
    asyncio.get_running_loop().call_later(deadline, task.cancel)
    done, _ = await asyncio.wait({task}, timeout=deadline + 5)  # never cancels what it waits for
    if not done:
        return "HUNG"  # the task ignores its cancellation: pymongo waits for a lock nobody will release
    try:
        task.result()
        return "OK"
    except asyncio.CancelledError:
        return "CANCELLED"
    except StageError as exc:
        return exc.code.name


@pytest.mark.parametrize("kind", STORES)
async def test_crashed_store_never_jams_the_client(tmp_path, kind):
    port = free_port()
    mongo = start_mongo(tmp_path / "data", port=port, timeout=60)
    make, calls = STORES[kind]
    store = make(mongo.uri)
    call = calls(store)
    try:
        assert await under_deadline(call, 2.0) == "OK"
        mongo.kill()
        random.seed(13)
        outcomes = []
        for _ in range(ROUNDS):
            outcomes += await asyncio.gather(*(under_deadline(call, random.uniform(0.2, 1.2))
                                               for _ in range(CONCURRENCY)))
        assert "OK" not in outcomes and set(outcomes) <= {"CANCELLED", "UNAVAILABLE", "DEADLINE_EXCEEDED"}, outcomes
        mongo = start_mongo(tmp_path / "data", port=port, timeout=60)
        after: list[str] = []

        async def recovered() -> bool:
            after.append(await under_deadline(call, 2.0))
            return after[-1] == "OK"
        await eventually_async(recovered, lambda: f"the client recovering after the restart (outcomes: {after[-5:]})",
                               timeout=15, interval=0.1)
    finally:
        closing = asyncio.ensure_future(store.close())
        done, _ = await asyncio.wait({closing}, timeout=10)  # asyncio.wait: never cancels what it waits for
        mongo.stop()
        assert done, "close() hung: a jammed client would keep serving from stopping on SIGTERM"
