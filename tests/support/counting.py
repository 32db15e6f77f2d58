"""A pymilvus client that counts the calls made through it, by method name.

``Counting(client)`` passes every attribute through to ``client``; each call of a method is counted in
``calls`` (a :class:`collections.Counter`). Attributes set on the proxy (the caches product code keeps on
its client, e.g. ``_mmsearch_no_aliases``) land on the proxy itself, not on the wrapped client.
"""
from __future__ import annotations

from collections import Counter


class Counting:
    def __init__(self, client):
        object.__setattr__(self, "_client", client)
        object.__setattr__(self, "calls", Counter())

    def __getattr__(self, name):
        value = getattr(self._client, name)
        if name.startswith("_") or not callable(value):
            return value

        def counted(*args, **kwargs):
            self.calls[name] += 1
            return value(*args, **kwargs)

        return counted

    def total(self) -> int:
        return sum(self.calls.values())

    def reset(self) -> None:
        self.calls.clear()
