"""The one base of every error a user can act on.

Core modules, the jobs and the services raise subclasses of
:class:`MmsearchError` with a message that names the value at fault and
what to do; the job commands print it as one ``error: ...`` line, the
services map it to a status. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class MmsearchError(Exception):
    """A failure the user can fix (bad input, a missing artifact, a dependency down)."""


QUOTE_CHARS = 64
"""The most characters of a client's value that a message quotes."""
MESSAGE_CHARS = 1000
"""The longest message an error status carries (gRPC details travel in metadata: 8 KiB at most)."""


def shown(value: object, limit: int = QUOTE_CHARS) -> str:
    """``repr(value)`` for a message, cut to ``limit`` characters with the full length said: a message
    that echoes client input must stay small (a 10,000-character scene name echoed whole made the
    status too large to send: RESOURCE_EXHAUSTED instead of INVALID_ARGUMENT)."""
    if isinstance(value, str) and len(value) > limit:
        return f"{value[:limit]!r}... ({len(value)} characters)"
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text)} characters)"


def clipped(message: str, limit: int = MESSAGE_CHARS) -> str:
    """``message`` cut to ``limit`` characters: the last bound on what one error status carries."""
    return message if len(message) <= limit else message[:limit - 3] + "..."
