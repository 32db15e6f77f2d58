"""The statistics of an A/B report, as pure functions (standard library only).

- :func:`wilson_interval`: the Wilson score interval of a proportion (CTR),
  which stays inside [0, 1] and keeps its coverage for small counts and
  rates near 0, where the textbook Wald interval does not.
- :func:`two_proportion_z_test`: the two-sided two-proportion z-test with the
  pooled variance, H0: both arms have the same CTR. This is the test the
  report names and decides with.
- :func:`difference_interval`: Newcombe's hybrid score interval (his method
  10, built from the two Wilson intervals) for the difference of two CTRs.
- :func:`mean_interval`: the normal-approximation interval of a mean from its
  sum and sum of squares (the MRR of first clicks).
- :func:`sample_size_per_arm`: impressions per arm that the z-test needs to
  detect an absolute CTR difference ``mde`` from ``baseline`` with the given
  level and power (the standard formula with the pooled variance under H0 and
  the unpooled one under H1).
"""
from __future__ import annotations

import math
from statistics import NormalDist

_NORMAL = NormalDist()


def z_quantile(p: float) -> float:
    return _NORMAL.inv_cdf(p)


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Wilson score interval of ``successes / n``; None when ``n`` is 0."""
    if n <= 0:
        return None
    z = z_quantile(0.5 + confidence / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def two_proportion_z_test(x1: int, n1: int, x2: int, n2: int) -> tuple[float, float]:
    """(z, two-sided p-value) of H0 ``p1 == p2`` with the pooled variance; z > 0 when arm 2 is higher."""
    if n1 <= 0 or n2 <= 0:
        return 0.0, 1.0
    pooled = (x1 + x2) / (n1 + n2)
    variance = pooled * (1 - pooled) * (1 / n1 + 1 / n2)
    if variance <= 0:
        return 0.0, 1.0
    z = (x2 / n2 - x1 / n1) / math.sqrt(variance)
    return z, 2 * (1 - _NORMAL.cdf(abs(z)))


def difference_interval(x1: int, n1: int, x2: int, n2: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Newcombe's interval for ``p2 - p1``; None when an arm has no impressions."""
    a, b = wilson_interval(x1, n1, confidence), wilson_interval(x2, n2, confidence)
    if a is None or b is None:
        return None
    p1, p2 = x1 / n1, x2 / n2
    d = p2 - p1
    lower = d - math.sqrt((p2 - b[0]) ** 2 + (a[1] - p1) ** 2)
    upper = d + math.sqrt((b[1] - p2) ** 2 + (p1 - a[0]) ** 2)
    return lower, upper


def mean_interval(total: float, total_sq: float, n: int, confidence: float = 0.95) -> tuple[float, float] | None:
    """Normal-approximation interval of a mean from its sum and sum of squares; None for fewer than 2 values."""
    if n < 2:
        return None
    mean = total / n
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1))
    half = z_quantile(0.5 + confidence / 2) * math.sqrt(variance / n)
    return mean - half, mean + half


def sample_size_per_arm(baseline: float, mde: float, alpha: float = 0.05, power: float = 0.8) -> int | None:
    """Impressions per arm to detect ``baseline -> baseline + mde`` (absolute); None when that is not a rate."""
    treated = baseline + mde
    if mde <= 0 or not 0 <= baseline <= 1 or not 0 < treated < 1:
        return None
    z_a, z_b = z_quantile(1 - alpha / 2), z_quantile(power)
    pooled = (baseline + treated) / 2
    root = z_a * math.sqrt(2 * pooled * (1 - pooled)) + z_b * math.sqrt(
        baseline * (1 - baseline) + treated * (1 - treated))
    return math.ceil(root * root / (mde * mde))
