"""The chart's dashboard and alert rules: present only when asked for, labelled for their consumers, and
every PromQL expression parses (promql-parser) and names only mmsearch metrics.

That those metrics and labels exist in the /metrics of a running stack is checked in
tests/observability/test_traces.py.
"""
from __future__ import annotations

import json

import pytest

from tests.chart import charttools as ct
from tests.support import promql


def test_off_by_default():
    items = ct.manifests("default")
    assert not ct.of_kind(items, "PrometheusRule")
    assert not [m for m in ct.of_kind(items, "ConfigMap") if "mmsearch.json" in m.doc.get("data", {})]
    assert not [e for d in ct.of_kind(items, "Deployment") for c in d.doc["spec"]["template"]["spec"]["containers"]
                for e in c.get("env", []) if e["name"].startswith("OTEL_")]


def test_the_dashboard_is_a_configmap_for_the_grafana_sidecar():
    (dashboard,) = [m for m in ct.of_kind(ct.manifests("observability"), "ConfigMap") if "mmsearch.json" in m.doc["data"]]
    assert dashboard.doc["metadata"]["labels"]["grafana_dashboard"] == "1"
    panels = {p["title"] for p in json.loads(dashboard.doc["data"]["mmsearch.json"])["panels"]}
    assert {"Searches per second by scene and arm", "Stage latency p50", "Stage latency p99", "Errors by status",
            "Summary cache hit rate", "Impressions dropped", "Encoder batch size p50 / p99",
            "Index versions served"} <= panels


def test_alert_rules_cover_errors_latency_readiness_and_impressions_with_the_thresholds_given():
    (rule,) = ct.of_kind(ct.manifests("observability"), "PrometheusRule")
    rules = {r["alert"]: r for r in rule.doc["spec"]["groups"][0]["rules"]}
    assert set(rules) == {"MmsearchSearchErrors", "MmsearchSearchSlow", "MmsearchServingNotReady",
                          "MmsearchImpressionsDropped"}
    assert rules["MmsearchSearchSlow"]["expr"].endswith("> 0.3")  # prometheusRule.p99Seconds of the value set
    assert rules["MmsearchSearchErrors"]["expr"].endswith("> 0.05") and rules["MmsearchSearchErrors"]["for"] == "5m"


EXPRESSIONS = promql.expressions(ct.manifests("observability"))


@pytest.mark.parametrize("where", sorted(EXPRESSIONS))
def test_every_expression_parses_and_selects_mmsearch_metrics(where):
    used = promql.uses(EXPRESSIONS[where])
    assert used and all(name.startswith("mmsearch_") for name in used), used


def test_bad_promql_is_refused_by_the_parser():
    with pytest.raises(ValueError):
        promql.uses("sum(rate(mmsearch_serving_requests_total[5m])")


def test_tracing_values_reach_every_service_and_triton():
    items = ct.manifests("observability")
    for deployment in ct.of_kind(items, "Deployment"):
        component = ct.component(deployment)
        if component not in {"web", "serving", "preprocess", "triton"}:
            continue
        container = deployment.doc["spec"]["template"]["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        if component == "triton":
            assert "--trace-config=opentelemetry,url=http://otel-collector.observability:4318/v1/traces" in container["args"]
            continue
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel-collector.observability:4317"
        assert env["OTEL_SERVICE_NAME"] == f"{ct.RELEASE}-mmsearch-{component}"
        assert env["OTEL_TRACES_SAMPLER_ARG"] == "0.25"
