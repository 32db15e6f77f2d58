"""A/B bucketing, MetaSpore style: SHA-256 of ``user_id#salt`` into weighted buckets.

Pure functions. The first 8 bytes of the digest, read big-endian, give a point
in [0, 1); the layer's arms cover that interval in config order, each a share
equal to its weight over the layer's total weight. The same user and salt
always land in the same arm; a layer's salt (default: ``scene/layer``) makes
layers independent of each other. A request without a user id gets the
layer's default arm; ``force_arms`` (debug) names an arm per layer and wins.
"""
from __future__ import annotations

import bisect
import hashlib
from typing import Mapping, Sequence

from mmsearch.core.errors import shown

_SCALE = float(1 << 64)


def bucket_point(user_id: str, salt: str) -> float:
    """Where ``user_id`` falls in [0, 1) for ``salt``."""
    digest = hashlib.sha256(f"{user_id}#{salt}".encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def cumulative(weights: Sequence[float]) -> list[float]:
    """Upper bounds of each arm's share of [0, 1)."""
    total = float(sum(weights))
    if total <= 0:
        raise ValueError("weights must sum to more than 0")
    bounds, acc = [], 0.0
    for weight in weights:
        acc += weight
        bounds.append(acc / total)
    bounds[-1] = 1.0
    return bounds


def pick(user_id: str, salt: str, bounds: Sequence[float]) -> int:
    """Index of the arm whose share holds ``user_id``'s point (``bounds`` from :func:`cumulative`)."""
    return min(bisect.bisect_right(bounds, bucket_point(user_id, salt)), len(bounds) - 1)


def assign(
    layers: Sequence[tuple[str, str, Sequence[str], Sequence[float], str]],
    user_id: str,
    force_arms: Mapping[str, str] | None = None,
) -> list[tuple[str, str]]:
    """One (layer, arm) per layer, in layer order.

    ``layers`` holds (name, salt, arm names, weights, default arm). A forced arm
    must be one of the layer's arms (KeyError otherwise, naming both); a forced
    layer that does not exist is a KeyError too, so typos do not pass silently.
    """
    force = dict(force_arms or {})
    names = {layer[0] for layer in layers}
    unknown = sorted(set(force) - names)
    if unknown:
        listed = ", ".join(shown(name) for name in unknown[:3]) + (f" and {len(unknown) - 3} more" if len(unknown) > 3 else "")
        raise KeyError(f"force_arms names unknown layer(s) {listed}; layers are {sorted(names)}")
    out = []
    for name, salt, arms, weights, default in layers:
        if name in force:
            if force[name] not in arms:
                raise KeyError(f"force_arms[{name!r}] = {shown(force[name])} is not an arm of layer {name!r}; "
                               f"arms are {list(arms)}")
            out.append((name, force[name]))
        elif not user_id:
            out.append((name, default))
        else:
            bounds = cumulative(weights)
            out.append((name, arms[pick(user_id, salt, bounds)]))
    return out
