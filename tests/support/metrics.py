"""Prometheus figures in tests, read through the public API (``REGISTRY.get_sample_value``), never through a
metric object's internals."""
from __future__ import annotations

from prometheus_client import REGISTRY


def sample(name: str, **labels: str) -> float:
    """The current value of the sample ``name`` (a counter's ``..._total``) with exactly these labels, as
    ``/metrics`` would show it; 0 while it has not been exported yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0
