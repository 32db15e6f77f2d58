"""What a source skips: a file (or one part of the work on it) that gives nothing, named and counted."""
from __future__ import annotations


class Skip(Exception):
    """A skip: ``reason`` is its name in prepare's ``skips`` counts; the message says what happened."""

    def __init__(self, reason: str, detail: str):
        super().__init__(detail)
        self.reason = reason
