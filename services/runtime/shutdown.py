"""Stopping a service on SIGTERM within its grace period, whatever hangs (serving, preprocess and web).

:func:`signalled` returns when SIGTERM or SIGINT arrives; :func:`stop_within`
runs the service's graceful stop (in-flight requests get the grace period) and
bounds it: a watchdog thread exits the process ``EXIT_SLACK_S`` after the grace
period whatever still runs (a client library stuck on a lock, an executor
thread, a connection that never finishes, the event loop's own teardown). A
thread, not a task, so a blocked event loop cannot stop it. The chart gives
each pod ``graceSeconds + 10`` before Kubernetes kills it.
"""
from __future__ import annotations

import asyncio
import logging
import os
import signal
import threading
from typing import Awaitable

log = logging.getLogger(__name__)

EXIT_SLACK_S = 5.0
"""Time past the grace period that stopping may take (closing clients) before the process exits anyway."""


def _exit_now(grace: float) -> None:
    log.error("did not stop within the grace period; exiting now", extra={"grace_seconds": grace})
    for handler in logging.getLogger().handlers:
        handler.flush()
    os._exit(1)


async def signalled() -> None:
    """Return when the process gets SIGTERM or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def stop_within(stopping: Awaitable[None], grace: float) -> None:
    """Await ``stopping`` (which gives in-flight work ``grace`` seconds); exit the process with code 1
    if it, or anything after it, is not done ``EXIT_SLACK_S`` past the grace period."""
    log.info("shutting down", extra={"grace_seconds": grace})
    watchdog = threading.Timer(grace + EXIT_SLACK_S, _exit_now, args=(grace,))
    watchdog.daemon = True  # a process that ends in time ends with it
    watchdog.start()
    task = asyncio.ensure_future(stopping)
    done, _ = await asyncio.wait({task}, timeout=grace + EXIT_SLACK_S)
    if not done:
        _exit_now(grace)
    task.result()
