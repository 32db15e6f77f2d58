"""JSON Lines, read one way: the corpus, a Q&A source and a labelled query set are all one object a line.

:func:`json_objects` skips blank lines, numbers lines from 1 as an editor does,
and raises :class:`JobError` naming the source and the line of one that is not
a JSON object, with what to do about it (``fix``). What a line must hold
beyond being an object is each reader's to check.
"""
from __future__ import annotations

import json
from typing import Iterable, Iterator

from mmsearch.jobs.errors import JobError


def json_objects(lines: Iterable[str] | str | bytes, source: str, *,
                 fix: str = "fix or remove the line") -> Iterator[tuple[int, dict]]:
    """(line number, object) per non-blank line of ``lines`` (an iterable of lines, or the whole text)."""
    if isinstance(lines, bytes):
        try:
            lines = lines.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise JobError(f"{source}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    if isinstance(lines, str):
        lines = lines.splitlines()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise JobError(f"{source} line {number}: not valid JSON ({exc.msg} at column {exc.colno}); {fix}") from None
        if not isinstance(row, dict):
            raise JobError(f"{source} line {number}: expected a JSON object, got {type(row).__name__}; {fix}")
        yield number, row
