"""The one base of every error a user can act on.

Core modules, the jobs and the services raise subclasses of
:class:`MmsearchError` with a message that names the value at fault and
what to do; the job commands print it as one ``error: ...`` line, the
services map it to a status. Anything else is a bug and keeps its traceback.
"""
from __future__ import annotations


class MmsearchError(Exception):
    """A failure the user can fix (bad input, a missing artifact, a dependency down)."""
