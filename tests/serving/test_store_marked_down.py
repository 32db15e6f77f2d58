"""When serving's document-store client marks the store down (and so answers UNAVAILABLE at once): only when
it cannot connect, never because one call ran out of time (an overloaded store is slow, not down).

:func:`cannot_connect` over pymongo's own exception classes, and :class:`ShieldedMongo` against a real
secantusd: a call that times out (too short a timeout; the store frozen with SIGSTOP, so it accepts but never
answers) leaves it up, a refused connection (the store killed) marks it down.
"""
from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest
from pymongo.errors import (AutoReconnect, ExecutionTimeout, NetworkTimeout, NotPrimaryError, OperationFailure,
                            PyMongoError, ServerSelectionTimeoutError, WaitQueueTimeoutError)

from mmsearch.dev.mongo import start_mongo
from mmsearch.services.serving.backends.shielded_mongo import ShieldedMongo, cannot_connect, dropped
from mmsearch.services.serving.errors import Unavailable
from tests.support.loops import eventually

REFUSED = AutoReconnect("127.0.0.1:1: [Errno 111] Connect call failed")
TIMED_OUT = NetworkTimeout("127.0.0.1:1: timed out")


@pytest.mark.parametrize("exc, server_errors, expected", [
    (REFUSED, [REFUSED], True),
    (AutoReconnect("connection is already closed"), [None], True),
    (ServerSelectionTimeoutError("no server"), [REFUSED], True),
    (ServerSelectionTimeoutError("no server"), [TIMED_OUT], False),
    (ServerSelectionTimeoutError("no server"), [REFUSED, None], False),
    (ServerSelectionTimeoutError("no server"), [], False),
    (TIMED_OUT, [None], False),
    (TIMED_OUT, [REFUSED], False),
    (ExecutionTimeout("operation would exceed time limit", 50), [None], False),
    (WaitQueueTimeoutError("no connection free"), [None], False),
    (NotPrimaryError("not primary"), [None], False),
    (OperationFailure("bad query", 2), [None], False),
    (Unavailable("client rebuilt"), [REFUSED], False),
])
def test_only_a_failed_connection_means_the_store_cannot_be_reached(exc, server_errors, expected):
    assert cannot_connect(exc, server_errors) is expected


def refused_by_os() -> AutoReconnect:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError as cause:
        try:
            raise AutoReconnect("127.0.0.1:1: pool reset") from cause
        except AutoReconnect as exc:
            return exc


@pytest.mark.parametrize("exc, expected", [
    (AutoReconnect("127.0.0.1:27017: connection is already closed"), True),
    (AutoReconnect("127.0.0.1:27017: [Errno 104] Connection reset by peer"), True),
    (REFUSED, False),
    (AutoReconnect("127.0.0.1:1: [Errno 111] Connection refused"), False),
    (refused_by_os(), False),
    (ServerSelectionTimeoutError("127.0.0.1:1: connection is already closed"), False),
    (TIMED_OUT, False),
    (OperationFailure("bad query", 2), False),
])
def test_only_a_lost_open_connection_is_confirmed_by_a_ping(exc, expected):
    assert dropped(exc) is expected


def state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


async def insert(client):
    return await client["mmsearch"]["probe"].insert_one({"x": 1})


@pytest.mark.slow
async def test_a_timed_out_probe_leaves_the_store_up_and_a_refused_one_marks_it_down(tmp_path):
    mongo = start_mongo(tmp_path / "data", timeout=60)
    store = ShieldedMongo(mongo.uri, "event store", timeout_s=1.0)
    pid = mongo.process.pid
    try:
        await store.call(insert, 2.0, probe=True)
        with pytest.raises(ExecutionTimeout):  # no time left for the round trip: refused before sending
            await store.call(insert, 1e-6, probe=True)
        assert store.down == ""

        os.kill(pid, signal.SIGSTOP)  # accepts connections, answers nothing: the extreme of overloaded
        try:
            eventually(lambda: state(pid) == "T", "secantusd stopped", timeout=10)
            with pytest.raises(PyMongoError) as caught:
                await store.call(insert, 0.5, probe=True)
            assert caught.value.timeout, repr(caught.value)
            assert store.down == ""
        finally:
            os.kill(pid, signal.SIGCONT)
        await store.call(insert, 5.0)  # not answered at once with Unavailable: the store was never marked down

        mongo.kill()
        with pytest.raises(PyMongoError):
            await store.call(insert, 1.0, probe=True)
        assert "Connect call failed" in store.down or "closed" in store.down, store.down
        with pytest.raises(Unavailable, match="is down"):
            await store.call(insert, 5.0)
    finally:
        await store.close()
        mongo.stop()


@pytest.mark.slow
async def test_a_dropped_pooled_connection_leaves_a_store_that_answers_up(tmp_path):
    """A pooled connection the store closed fails its call with "connection is already closed" (as pymongo
    raises it when the transport is closing) while the store answers: the ping that confirms finds it up."""
    mongo = start_mongo(tmp_path / "data", timeout=60)
    store = ShieldedMongo(mongo.uri, "event store", timeout_s=1.0)

    async def dropped(client):
        await insert(client)
        raise AutoReconnect("127.0.0.1: connection is already closed")

    try:
        with pytest.raises(AutoReconnect):
            await store.call(dropped, 2.0, probe=True)
        assert store.down == ""
        await store.call(insert, 2.0)
        mongo.kill()
        with pytest.raises(AutoReconnect):
            await store.call(dropped, 2.0, probe=True)
        assert store.down, "a dropped connection while the store is gone marks it down"
    finally:
        await store.close()
        mongo.stop()
