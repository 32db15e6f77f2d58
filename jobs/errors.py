"""How a job stage fails: one clear line on stderr and a non-zero exit code.

Stage logic raises :class:`JobError` (or another
:class:`mmsearch.core.errors.MmsearchError`: an artifact or Milvus store
error) with a message that names the flag or value at fault and what to do;
the command wraps its body in :func:`exit_on_error`, which prints
``error: <message>`` (credentials in URIs redacted) and exits 1. Anything else is a bug and keeps its
traceback.
"""
from __future__ import annotations

import contextlib
import sys
from typing import Iterator

import typer

from mmsearch.core.errors import MmsearchError
from mmsearch.core.redact import redact


class JobError(MmsearchError):
    """A failure the operator of the job can fix (bad input, a dependency down)."""


@contextlib.contextmanager
def exit_on_error() -> Iterator[None]:
    try:
        yield
    except MmsearchError as exc:
        print(f"error: {redact(str(exc))}", file=sys.stderr, flush=True)
        raise typer.Exit(1) from None
