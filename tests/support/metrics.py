"""Prometheus figures in tests and benchmarks: in this process through the public API
(``REGISTRY.get_sample_value``), never through a metric object's internals; of another process from its
``/metrics`` page, parsed by prometheus_client's own parser."""
from __future__ import annotations

from prometheus_client import REGISTRY
from prometheus_client.samples import Sample


def sample(name: str, **labels: str) -> float:
    """The current value of the sample ``name`` (a counter's ``..._total``) with exactly these labels, as
    ``/metrics`` would show it; 0 while it has not been exported yet."""
    return REGISTRY.get_sample_value(name, labels) or 0.0


def scrape(port: int) -> list[Sample]:
    """Every sample of the ``/metrics`` page served on 127.0.0.1:``port``."""
    import urllib.request

    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return [sample for family in text_string_to_metric_families(text) for sample in family.samples]


def total(samples: list[Sample], name: str, **labels: str) -> float:
    """The sum of the samples ``name`` whose labels include ``labels`` (0.0 when there are none). Pure."""
    return sum(s.value for s in samples if s.name == name and labels.items() <= s.labels.items())
