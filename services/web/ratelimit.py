"""Per-client rate limiting of the feedback endpoint: a token bucket per client address (pure, in memory).

Each client gets ``burst`` events at once and ``rate`` more per second after
that; :meth:`RateLimiter.allow` answers whether one more is allowed now and,
if not, how many seconds until it would be. At most ``max_clients`` buckets
are kept (the least recently seen go first), so a flood of addresses cannot
grow memory without bound; a forgotten client starts again with a full
bucket. Each web replica limits on its own.
"""
from __future__ import annotations

import time
from collections import OrderedDict
from typing import Callable


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.max_clients, self._clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def allow(self, client: str) -> tuple[bool, float]:
        """(allowed, seconds to wait when not)."""
        now = self._clock()
        tokens, at = self._buckets.pop(client, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1.0 - tokens) / self.rate


def client_address(peer: str | None, headers, header: str) -> str:
    """The client to limit: the last entry of ``header`` (the address the nearest trusted proxy saw) when
    that header is configured and present, else the peer address. Pure."""
    if header:
        value = headers.get(header, "")
        last = value.split(",")[-1].strip()
        if last:
            return last
    return peer or "unknown"
