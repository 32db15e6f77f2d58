"""JSON read one way: the corpus, a Q&A source and a labelled query set are one object a line; a flag may be one object.

:func:`json_objects` skips blank lines, numbers lines from 1 as an editor does,
and raises :class:`JobError` naming the source and the line of one that is not
a JSON object, with what to do about it (``fix``); :func:`json_object` is one
such object (a line, or a flag's value such as ``--index-params``). What an
object must hold beyond being one is each reader's to check.
"""
from __future__ import annotations

import json
import math
import re
from typing import Iterable, Iterator

from mmsearch.jobs.errors import JobError

_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


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
        if line.strip():
            yield number, json_object(line, f"{source} line {number}", fix=fix)


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON value")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"{literal[:20]} is beyond the range of a number")
    return value


def json_object(text: str, where: str, *, fix: str) -> dict:
    """``text`` as one JSON object; :class:`JobError` naming ``where`` and what to do (``fix``) otherwise.

    Beyond the grammar it refuses what JSON's own definition leaves out or the stages cannot carry:
    ``NaN``/``Infinity`` literals and numbers beyond a float's range, nesting deeper than Python's recursion limit, integers of more digits
    than Python converts, and lone surrogate escapes (``\\ud800``: not encodable as UTF-8)."""
    try:
        value = json.loads(text, parse_constant=_no_constant, parse_float=_finite)
    except json.JSONDecodeError as exc:
        raise JobError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno}); {fix}") from None
    except RecursionError:
        raise JobError(f"{where}: JSON nested too deeply to read; {fix}") from None
    except ValueError as exc:  # a NaN/Infinity literal, an integer beyond the digit limit
        raise JobError(f"{where}: not valid JSON ({str(exc).split(':')[0]}); {fix}") from None
    if not isinstance(value, dict):
        raise JobError(f"{where}: expected a JSON object, got {type(value).__name__}; {fix}")
    if _SURROGATE_ESCAPE.search(text):
        try:
            json.dumps(value, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError as exc:
            raise JobError(f"{where}: a \\u escape of a lone surrogate ({exc.object[exc.start]!r}) is not "
                           f"text; {fix}") from None
    return value
