"""Progress reporting for job stages.

On a terminal: a tqdm bar. Otherwise (a Kubernetes Job's log): one JSON line
per update on stdout, ``{"stage": ..., "event": "progress", "done": n, "total": m}``,
at most every ``interval`` seconds, plus a final ``"event": "done"`` line with
the stage's summary. The operator and tests read these lines.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Any, Callable, TextIO

from mmsearch.jobs.errors import JobError

# A test hook: called with (stage, documents done) after every update, that is after each batch a stage
# has finished (tests stop a job at a known point with it, not at a time). None in production.
after_update: Callable[[str, int], None] | None = None


def emit(stage: str, event: str, stream: TextIO | None = None, **fields: Any) -> None:
    stream = stream or sys.stdout
    stream.write(json.dumps({"stage": stage, "event": event, **fields}, default=str) + "\n")
    stream.flush()


def check_summary_file(path: str | None) -> None:
    """Refuse a ``--summary-file`` that cannot be written before the work runs, not after (a Job's pod
    points it at its termination message, which the operator reads)."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise JobError(f"--summary-file {path} is a folder: give a file path")
    if not os.path.isdir(folder):
        raise JobError(f"--summary-file {path}: its folder {folder} does not exist: create it or give another path")
    if not os.access(folder, os.W_OK) and not (os.path.exists(path) and os.access(path, os.W_OK)):
        raise JobError(f"--summary-file {path}: its folder {folder} is not writable: give a writable path")


def write_summary_file(path: str | None, summary: dict[str, Any], where: str = "") -> None:
    """Write ``summary`` as one compact JSON object to ``path`` (nothing when None)."""
    if not path:
        return
    try:
        with open(path, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(summary, separators=(",", ":"), default=str))
    except OSError as exc:
        raise JobError(f"--summary-file {path}: cannot write it ({exc.strerror or exc})"
                       + (f"; {where}" if where else "")) from None


class Progress:
    """``with Progress("encode", total=n) as p: p.update(k)``; ``p.finish(**summary)``."""

    def __init__(self, stage: str, total: int | None = None, *, interval: float = 2.0,
                 stream: TextIO | None = None, tty: bool | None = None):
        self.stage = stage
        self.total = total
        self.done = 0
        self.interval = interval
        self.stream = stream or sys.stdout
        self._tty = self.stream.isatty() if tty is None else tty
        self._last = 0.0
        self._bar = None
        if self._tty:
            from tqdm import tqdm

            self._bar = tqdm(total=total, desc=stage, unit="doc", file=sys.stderr)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def update(self, n: int = 1) -> None:
        self.done += n
        if self._bar is not None:
            self._bar.update(n)
        else:
            now = time.monotonic()
            if now - self._last >= self.interval or (self.total is not None and self.done >= self.total):
                self._last = now
                emit(self.stage, "progress", self.stream, done=self.done, total=self.total)
        if after_update is not None:
            after_update(self.stage, self.done)

    def finish(self, **summary: Any) -> None:
        self.close()
        emit(self.stage, "done", self.stream, done=self.done, total=self.total, **summary)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
