"""The PromQL of the chart's dashboard and alert rules, parsed (promql-parser) and read for what it uses.

:func:`expressions` gives every expression of the ``observability`` value set's
dashboard ConfigMap and PrometheusRule; :func:`uses` parses one (raising
ValueError on bad PromQL) and returns the metric names it selects and, per
metric, the label names it needs (its matchers and the ``by``/``on`` labels of
the aggregations and matchings above it).
"""
from __future__ import annotations

import json
from collections import defaultdict

import promql_parser as pp

GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h"}


def expressions(manifests) -> dict[str, str]:
    """{where: expression} of the dashboard's panel targets and the alert rules in rendered ``manifests``."""
    found: dict[str, str] = {}
    for m in manifests:
        if m.doc["kind"] == "ConfigMap" and "mmsearch.json" in m.doc.get("data", {}):
            dashboard = json.loads(m.doc["data"]["mmsearch.json"])
            for panel in dashboard["panels"]:
                for target in panel["targets"]:
                    found[f"panel {panel['title']!r} {target['refId']}"] = target["expr"]
        if m.doc["kind"] == "PrometheusRule":
            for group in m.doc["spec"]["groups"]:
                for rule in group["rules"]:
                    found[f"alert {rule['alert']}"] = rule["expr"]
    return found


def grafana_free(expr: str) -> str:
    """``expr`` with Grafana's interval variables replaced by durations (a template variable inside a label
    matcher's string is plain PromQL already). Pure."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def uses(expr: str) -> dict[str, set[str]]:
    """{metric: labels it needs} of one expression (see module doc)."""
    needs: dict[str, set[str]] = defaultdict(set)
    _walk(pp.parse(grafana_free(expr)), set(), needs)
    return dict(needs)


def _walk(node, above: set[str], needs: dict[str, set[str]]) -> None:
    if isinstance(node, pp.VectorSelector):
        needs[node.name] |= above | {m.name for m in node.matchers.matchers if m.name != "__name__"}
    elif isinstance(node, pp.MatrixSelector):
        _walk(node.vector_selector, above, needs)
    elif isinstance(node, pp.AggregateExpr):
        labels = set(node.modifier.labels) if node.modifier and node.modifier.type == pp.AggModifierType.By else set()
        _walk(node.expr, above | labels, needs)
    elif isinstance(node, pp.BinaryExpr):
        matching = node.modifier.matching if node.modifier else None
        labels = set(matching.labels) if matching is not None and matching.type == pp.LabelModifierType.Include else set()
        _walk(node.lhs, above | labels, needs)
        _walk(node.rhs, above | labels, needs)
    elif isinstance(node, pp.Call):
        for arg in node.args:
            _walk(arg, above, needs)
    elif isinstance(node, (pp.ParenExpr, pp.UnaryExpr, pp.SubqueryExpr)):
        _walk(node.expr, above, needs)


def exposed(text: str) -> dict[str, set[str]]:
    """{sample name: label names} of a /metrics page (the Prometheus text format). Pure."""
    from prometheus_client.parser import text_string_to_metric_families

    out: dict[str, set[str]] = defaultdict(set)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] |= set(sample.labels)
    return dict(out)

