"""Which OTEL_* variables turn tracing on (a pure choice), and that it is off by default."""
from __future__ import annotations

import pytest

from mmsearch.services.runtime import tracing


@pytest.mark.parametrize("environ, choice", [
    ({}, None),
    ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, "otlp"),
    ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4317"}, "otlp"),
    ({"OTEL_TRACES_EXPORTER": "console"}, "console"),
    ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, None),
    ({"OTEL_SDK_DISABLED": "true", "OTEL_TRACES_EXPORTER": "otlp"}, None),
])
def test_the_variables_choose_the_exporter(environ, choice):
    assert tracing.exporter_choice(environ) == choice


def test_an_unknown_exporter_is_refused_naming_the_variable_and_the_choices():
    with pytest.raises(ValueError, match=r"OTEL_TRACES_EXPORTER='zipkin'.*\['otlp', 'console', 'none'\]"):
        tracing.exporter_choice({"OTEL_TRACES_EXPORTER": "zipkin"})
    with pytest.raises(SystemExit, match="OTEL_TRACES_EXPORTER"):
        tracing.configure("mmsearch-test", {"OTEL_TRACES_EXPORTER": "zipkin"})


def test_off_by_default_costs_a_shared_null_context():
    assert not tracing.configure("mmsearch-test", {})
    assert tracing.span("match") is tracing.span("embed")
    assert tracing.headers() is None and tracing.trace_id() is None
    assert tracing.server_interceptors() == [] and tracing.client_interceptors() == []
