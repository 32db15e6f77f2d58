"""Rate limits: a token bucket per caller (pure, in memory), and the client address behind trusted proxies.

Each caller gets ``burst`` requests at once and ``rate`` more per second after
that; :meth:`RateLimiter.allow` answers whether one more is allowed now and,
if not, how many seconds until it would be. At most ``max_clients`` buckets
are kept (the least recently seen go first), so a flood of addresses cannot
grow memory without bound; a forgotten caller starts again with a full
bucket. Each replica limits on its own.

:func:`client_address` is the address a limit keyed on the client uses: the
peer as the server sees it, unless the peer is one of the trusted proxies;
then the forwarding header (``X-Forwarded-For``) is read from the right,
skipping trusted proxies, and the first address that is not one is the
client. A client that sends its own ``X-Forwarded-For`` to a server with no
trusted proxies changes nothing.
"""
from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from typing import Callable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimiter:
    def __init__(self, rate: float, burst: int, max_clients: int = 10_000,
                 clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.max_clients, self._clock = rate, burst, max_clients, clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # client -> (tokens, at)

    def allow(self, client: str, rate: float | None = None, burst: int | None = None) -> tuple[bool, float]:
        """(allowed, seconds to wait when not); ``rate``/``burst`` override the limiter's for this caller."""
        rate, burst = rate or self.rate, burst or self.burst
        now = self._clock()
        tokens, at = self._buckets.pop(client, (float(burst), now))
        tokens = min(float(burst), tokens + (now - at) * rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        self._buckets[client] = (tokens, now)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return allowed, 0.0 if allowed else (1.0 - tokens) / rate


def parse_networks(text: str) -> tuple[Network, ...]:
    """``10.0.0.0/8, 192.168.1.7`` -> networks; raises ValueError naming the entry that is not one. Pure."""
    networks = []
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            raise ValueError(f"{entry!r} is not an IP address or CIDR network (e.g. 10.0.0.0/8)") from None
    return tuple(networks)


def _trusted(address: str, trusted: Sequence[Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in net for net in trusted)


def client_address(peer: str | None, forwarded: str | None, trusted: Sequence[Network]) -> str:
    """The client to limit (see the module doc): ``peer`` unless it is a trusted proxy. Pure."""
    client = peer or "unknown"
    if not trusted or not _trusted(client, trusted) or not forwarded:
        return client
    for hop in reversed([h.strip() for h in forwarded.split(",")]):
        if not hop:
            continue
        if not _trusted(hop, trusted):
            return hop[:64]
        client = hop
    return client
