"""One MongoDB-wire client whose calls are never cancelled by their callers, and rebuilt when it jams.

Serving's stores (:mod:`~mmsearch.services.serving.backends.summary`'s summary documents,
:mod:`~mmsearch.services.serving.backends.event_store`' impressions and feedback) talk to the store
through :class:`ShieldedMongo`. Why (serving once jammed for good after
the store restarted under load):

- pymongo's coroutines are never cancelled. On Python 3.11 pymongo waits for
  the topology in ``asyncio.wait_for(condition.wait(), ...)``; a cancellation
  that lands while that wait_for is handling its own timeout (a stage timeout
  and the RPC's own cancellation at the client's deadline arrive together)
  leaves the topology lock acquired for good: every later server selection
  (and ``close()``) then waits forever, and the next one to try raises
  ``RuntimeError: Lock is not acquired``. So every call runs in a task of its
  own, bounded by ``pymongo.timeout`` (which bounds server selection, the
  round trip and the query), and the caller waits for it through
  ``asyncio.shield``: a caller that gives up leaves the task to end at its own
  timeout.
- A client that breaks anyway is rebuilt: an unexpected exception (not a
  ``PyMongoError``) from pymongo, or a call that outlives its timeout by
  :data:`STUCK_AFTER_S` (seen by :meth:`ShieldedMongo.check_stuck`, which the
  summary store's health ping and the event store's writes run, not every
  summary lookup on the search path), replaces the client with a fresh one;
  the old one is closed in the background, never awaited on the request path.
  Serving thus recovers by itself once the store is back.
- ``close()`` is bounded too (:data:`CLOSE_TIMEOUT_S`): stopping serving never
  waits on a broken client.
- Fail fast while the store is down: pymongo answers a refused connection only
  at the end of server selection, i.e. after the caller's whole timeout. A
  probe call (``probe=True``: the health loop's pings, the impression drain's
  writes) that finds the store unreachable marks it ``down``; until a call
  succeeds again, every other call raises :class:`Unavailable` at once instead
  of waiting out its deadline (the probes go on, so the store is seen back
  within one round). Unreachable is :func:`cannot_connect`: a refused or
  dropped connection, not a call that ran out of time (an overloaded store is
  slow, not down, and its callers keep their own deadlines). A lost open
  connection (:func:`dropped`: closed, reset) is confirmed by a ping that fails
  too: a pooled connection the store closed fails its call with "connection is
  already closed" while the store answers (seen on CI: the event store marked
  down for a round, a feedback refused at once). A refused connection, or no
  server found in time while each refused, needs no confirming.
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any, Awaitable, Callable

import pymongo
from pymongo import AsyncMongoClient
from pymongo.errors import ConnectionFailure, NotPrimaryError, PyMongoError, ServerSelectionTimeoutError

from mmsearch.core.redact import redact
from mmsearch.services.serving.errors import Unavailable

log = logging.getLogger(__name__)

STUCK_AFTER_S = 2.0    # a call this long past its own pymongo.timeout: the client is jammed
CLOSE_TIMEOUT_S = 2.0  # the longest wait for a client to close


class ShieldedMongo:
    """See the module doc. ``what`` names the store in logs and errors ("summary store")."""

    def __init__(self, uri: str, what: str, *, timeout_s: float):
        self.shown = redact(uri)
        self._uri, self._what, self._timeout = uri, what, timeout_s
        self._client: AsyncMongoClient = self._new_client()
        self._tasks: set[asyncio.Task] = set()  # calls under way (each ends at its own timeout)
        self.rebuilt = 0  # how many times a broken client was replaced
        self.down = ""    # why the last probe failed; "" while the store answers

    def _new_client(self) -> AsyncMongoClient:
        ms = int(self._timeout * 1000)
        return AsyncMongoClient(self._uri, serverSelectionTimeoutMS=ms, connectTimeoutMS=ms, tz_aware=True)

    def _rebuild(self, broken: AsyncMongoClient, why: str) -> None:
        """Replace ``broken`` (if it is still the current client) and close it in the background."""
        if broken is not self._client:
            return
        log.warning("rebuilding the %s client", self._what, extra={"store": self.shown, "reason": why})
        self._client = self._new_client()
        self.rebuilt += 1
        self._spawn(self._close(broken))

    def _spawn(self, coro) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a caller that gave up never sees it

    async def call(self, op: Callable[[AsyncMongoClient], Awaitable[Any]], timeout: float, *,
                   probe: bool = False) -> Any:
        """``op(client)`` in a task of its own under ``pymongo.timeout(timeout)``; never cancelled by our
        caller. Raises what pymongo raises (``PyMongoError``), or :class:`Unavailable` when pymongo's
        own state broke (the client is rebuilt) or, unless ``probe``, at once while the store is down."""
        if self.down and not probe:
            raise Unavailable(f"the {self._what} at {self.shown} is down ({self.down}); answering at once until "
                              "a probe reaches it again")
        try:
            result = await self._call(op, timeout)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            if (probe and cannot_connect(exc, self._server_errors())
                    and not (dropped(exc) and await self._answers_ping(timeout))):
                self.down = short(exc)
            raise
        self.down = ""
        return result

    async def _answers_ping(self, timeout: float) -> bool:
        """Whether the store answers a ping on a fresh connection (pymongo drops the pool after a network
        error): a pooled connection the server or the network closed fails its call as a store gone would."""
        try:
            await self._call(lambda client: client.admin.command("ping"), timeout)
        except Exception:
            return False
        return True

    def _server_errors(self) -> list[BaseException | None]:
        """The last error pymongo's monitor saw for each server of the current client (None: it answered)."""
        try:
            return [sd.error for sd in self._client.topology_description.server_descriptions().values()]
        except Exception:  # a client being rebuilt: nothing known
            return []

    async def _call(self, op: Callable[[AsyncMongoClient], Awaitable[Any]], timeout: float) -> Any:
        client = self._client

        async def run():
            with pymongo.timeout(timeout):
                return await op(client)

        task = self._spawn(run())
        task.started, task.timeout, task.client = time.monotonic(), timeout, client  # type: ignore[attr-defined]
        try:
            return await asyncio.shield(task)
        except (PyMongoError, asyncio.CancelledError):
            raise
        except Exception as exc:  # pymongo's internal state broke: never again on this client
            self._rebuild(client, f"{type(exc).__name__}: {exc}")
            raise Unavailable(f"the {self._what} at {self.shown} failed ({type(exc).__name__}); "
                              "its client was rebuilt") from None

    def check_stuck(self) -> None:
        """Rebuild the client if a call has outlived its timeout by :data:`STUCK_AFTER_S`."""
        now = time.monotonic()
        for task in list(self._tasks):
            started = getattr(task, "started", None)
            if started is not None and now - started > task.timeout + STUCK_AFTER_S:  # type: ignore[attr-defined]
                self._rebuild(task.client, f"a call has been waiting {now - started:.1f}s "  # type: ignore[attr-defined]
                                           f"past its {task.timeout:.1f}s timeout")  # type: ignore[attr-defined]

    async def _close(self, client: AsyncMongoClient) -> None:
        """Close ``client`` within CLOSE_TIMEOUT_S (asyncio.wait: a close stuck on a broken lock is left)."""
        closing = asyncio.ensure_future(client.close())
        done, _ = await asyncio.wait({closing}, timeout=CLOSE_TIMEOUT_S)
        if not done or closing.exception() is not None:
            log.warning("the %s client did not close cleanly", self._what,
                        extra={"error": repr(closing.exception()) if done else "timed out"})

    async def close(self) -> None:
        """Close the client and let the calls under way end (never cancelled), within CLOSE_TIMEOUT_S."""
        calls = set(self._tasks)
        closing = asyncio.ensure_future(self._client.close())
        done, _ = await asyncio.wait({closing, *calls}, timeout=CLOSE_TIMEOUT_S)
        if closing not in done or closing.exception() is not None:
            log.warning("the %s client did not close cleanly", self._what,
                        extra={"error": repr(closing.exception()) if closing in done else "timed out"})


def cannot_connect(exc: BaseException, server_errors: list[BaseException | None]) -> bool:
    """Whether ``exc`` (from a call) says the store cannot be reached, given the last error pymongo's monitor
    saw for each server (None: it answered). Pure.

    Unreachable: a connection refused or dropped (an ``AutoReconnect`` that is not a timeout), or no server
    found in time (``ServerSelectionTimeoutError``) while every server's last error was such a failure. Not:
    an operation that ran out of time (``NetworkTimeout``, ``ExecutionTimeout``, a wait for a pooled
    connection, a server selection while a server's last check timed out or succeeded), a replica set
    without a primary for now (``NotPrimaryError``), or an error the store answered with.
    """
    if not isinstance(exc, ConnectionFailure) or isinstance(exc, NotPrimaryError):
        return False
    if isinstance(exc, ServerSelectionTimeoutError):
        return bool(server_errors) and all(
            error is not None and not isinstance(error, TimeoutError) and not getattr(error, "timeout", False)
            for error in server_errors)
    return not exc.timeout


def dropped(exc: BaseException) -> bool:
    """Whether ``exc`` says an open connection was lost (closed, reset), which a pooled connection the store or
    the network closed gives while the store answers, rather than that the store refused a new one or none was
    found in time (both say it is gone) or a call ran out of time. Pure."""
    if (isinstance(exc, ServerSelectionTimeoutError) or not isinstance(exc, ConnectionFailure)
            or getattr(exc, "timeout", False)):
        return False
    causes, cause = [], exc
    while cause is not None and len(causes) < 8:
        causes.append(cause)
        cause = cause.__cause__ or cause.__context__
    text = str(exc).lower()
    return not (any(isinstance(c, ConnectionRefusedError) for c in causes)
                or "refused" in text or "connect call failed" in text or "errno 111" in text)


def short(exc: BaseException) -> str:
    """pymongo's message without its topology dump, credentials redacted (one line, at most 300 characters)."""
    text = str(exc).split(", Timeout:")[0].split(" (configured timeouts")[0]
    return redact(" ".join(text.split())[:300]) or type(exc).__name__
