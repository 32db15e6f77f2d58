"""Loops for tests: :func:`eventually` (and :func:`eventually_async`), the one way a test waits for
something to happen; :func:`rounds_pass`, to wait for a watcher to look again instead of sleeping; and
:class:`ServiceLoop`, an asyncio loop in a daemon thread, so tests can block while real servers run in it.

A test never sleeps and then asserts: it polls a condition with a deadline, and when it must show that
something did *not* happen, it waits until the loop that would have made it happen has run N more
rounds (the product's watchers count their rounds: ``RouteWatcher.rounds``, ``Health.rounds``).
"""
from __future__ import annotations

import asyncio
import inspect
import threading
import time
from typing import Any, Awaitable, Callable, TypeVar

T = TypeVar("T")


class NotReached(TimeoutError, AssertionError):
    """A condition that did not hold in time (an AssertionError for pytest, a TimeoutError for callers)."""


def _failure(what: str | Callable[[], str], timeout: float, last: Any, error: BaseException | None) -> NotReached:
    seen = f"; last error: {type(error).__name__}: {error}" if error is not None else f"; last: {last!r}"
    return NotReached(f"{what() if callable(what) else what}: not within {timeout:g} s{seen}")


def eventually(probe: Callable[[], T], what: str | Callable[[], str] = "condition", *, timeout: float = 30.0, interval: float = 0.05,
               retry: tuple[type[BaseException], ...] = ()) -> T:
    """Call ``probe`` until it returns something truthy, and return that.

    An exception of a type in ``retry`` means "not yet" (the last one is in the failure); any other
    propagates at once (a probe that asserts a process is still alive fails fast). After ``timeout``
    seconds: :class:`NotReached` naming ``what`` (a string, or a function that says it then).
    """
    deadline = time.monotonic() + timeout
    while True:
        last, error = None, None
        try:
            last = probe()
            if last:
                return last
        except retry as exc:
            error = exc
        if time.monotonic() >= deadline:
            raise _failure(what, timeout, last, error)
        time.sleep(interval)


async def eventually_async(probe: Callable[[], T | Awaitable[T]], what: str | Callable[[], str] = "condition", *, timeout: float = 30.0,
                           interval: float = 0.05, retry: tuple[type[BaseException], ...] = ()) -> T:
    """:func:`eventually` inside an event loop: ``probe`` may be a coroutine function; the loop runs
    (other tasks go on) between tries. A probe that needs blocking I/O runs it in a thread
    (``asyncio.to_thread``), never on the loop."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        last, error = None, None
        try:
            last = probe()
            if inspect.isawaitable(last):
                last = await last
            if last:
                return last
        except retry as exc:
            error = exc
        if loop.time() >= deadline:
            raise _failure(what, timeout, last, error)
        await asyncio.sleep(interval)


def rounds_pass(rounds: Callable[[], int], what: str, n: int = 2, timeout: float = 30.0) -> None:
    """Wait until the counter ``rounds()`` has moved ``n`` past its value now: the loop it counts has
    looked again ``n`` times (at least once in full), so what it would have changed would show."""
    before = rounds()
    eventually(lambda: rounds() >= before + n, f"{n} more rounds of the {what}", timeout=timeout)


class ServiceLoop:
    """An asyncio loop in a daemon thread; ``call(coro)`` runs a coroutine there and waits."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="service-loop", daemon=True)
        self.thread.start()

    def call(self, coro, timeout: float = 120.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
