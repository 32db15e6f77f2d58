"""Rendering the chart with the real Helm v4 engine (helm_python) and reading the result.

``VALUE_SETS`` is the matrix every chart test runs over; each set has a golden
file of its ``helm template`` output under tests/chart/golden/. The signing keys
the chart draws at install (templates/signing-keys.yaml) are random by design:
:func:`stable` writes them as ``<random>`` (base64) in what the tests read, and
:func:`render_raw` gives them as drawn.
"""
from __future__ import annotations

import base64
import copy
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterator

import helm_python
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "mmsearch"
RELEASE = "rel"
NAMESPACE = "search"
KUBE_VERSION = "1.33.0"

_S3_SECRET = {"existingSecret": "s3-creds", "accessKeyIdKey": "access-key", "secretAccessKeyKey": "secret-key"}

VALUE_SETS: dict[str, dict[str, Any]] = {
    "default": {},
    # Triton on a GPU node pool, models from MinIO.
    "triton-gpu": {
        "modelRepository": {
            "uri": "s3://models/repo",
            "models": ["minilm", "clip", "clip-image"],
            "s3": {"endpointUrl": "https://minio.storage:9000", **_S3_SECRET},
        },
        "triton": {
            "gpu": {"enabled": True, "count": 1},
            "nodeSelector": {"nvidia.com/gpu.present": "true"},
            "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        },
    },
    # No Triton: serving runs the same ONNX models in process.
    "no-triton": {"triton": {"enabled": False}},
    # Milvus and MongoDB installed by the chart's dependencies.
    "dependencies": {"milvus": {"enabled": True}, "mongodb": {"enabled": True}},
    # Every optional object, credentials from existing Secrets.
    "full": {
        "image": {"digest": "sha256:" + "a" * 64},
        "modelRepository": {"s3": _S3_SECRET},
        "externalMilvus": {"uri": "https://milvus.db:19530", "existingSecret": "milvus-creds"},
        "externalMongodb": {"existingSecret": "mongo-creds"},
        "feedback": {"existingSecret": "feedback-key"},
        "access": {"trustedProxies": ["10.42.0.0/16"], "clientIpHeader": "X-Forwarded-For"},
        "ingress": {
            "enabled": True,
            "className": "nginx",
            "hosts": [{"host": "search.example.com", "paths": [{"path": "/", "pathType": "Prefix"}]}],
            "tls": [{"secretName": "search-tls", "hosts": ["search.example.com"]}],
        },
        "preprocess": {"autoscaling": {"enabled": True}, "podDisruptionBudget": {"enabled": True}},
        "serving": {"autoscaling": {"enabled": True}, "podDisruptionBudget": {"enabled": True, "minAvailable": 1},
                    "paging": {"maxDepth": 5000, "existingSecret": "paging-key"}},
        "web": {"autoscaling": {"enabled": True}, "podDisruptionBudget": {"enabled": True}},
        "triton": {"podDisruptionBudget": {"enabled": True}},
        "writer": {"enabled": True, "scenes": {"t2t": {}, "photos": {"collection": "{collection}_docs"}}},
        "serviceMonitor": {"enabled": True, "labels": {"release": "prometheus"}},
        "networkPolicy": {
            "enabled": True,
            "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
            "webFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "ingress-nginx"}}}],
        },
    },
    # The operator watches every namespace.
    "cluster-wide": {"operator": {"clusterWide": True}},
    # API keys and mutual TLS on every hop, certificates from cert-manager, web over HTTPS behind the ingress.
    "secure": {
        "access": {"existingSecret": "mmsearch-keys", "trustedProxies": ["10.42.0.0/16", "fd00::/8"]},
        "tls": {"enabled": True, "mutual": True, "web": {"https": True},
                "certManager": {"issuerRef": {"name": "mmsearch-ca", "kind": "ClusterIssuer"}}},
        "serving": {"replicas": 3},
        "writer": {"enabled": True, "scenes": {"t2t": {}}},
        "triton": {"podAnnotations": {"reloader.stakater.com/auto": "true"}},
        "networkPolicy": {"enabled": True},
    },
    # TLS (not mutual) from Secrets of the user's, keys with web's relay key in a Secret of its own,
    # anonymous search on one scene, signing keys from the user's Secrets (nothing generated).
    "secure-secrets": {
        "access": {"existingSecret": "mmsearch-keys", "relayKey": {"existingSecret": "web-relay", "key": "key"},
                   "anonymousScenes": "t2t"},
        "tls": {"enabled": True, "web": {"existingSecret": "web-cert"}, "serving": {"existingSecret": "serving-cert"},
                "preprocess": {"existingSecret": "preprocess-cert"}, "triton": {"existingSecret": "triton-cert"}},
        "feedback": {"existingSecret": "feedback-key"},
        "serving": {"paging": {"existingSecret": "paging-key"}},
    },
    # The smallest release: no operator, no test hook, the default ServiceAccount.
    "minimal": {"operator": {"enabled": False}, "tests": {"enabled": False}, "serviceAccount": {"create": False},
                "feedback": {"enabled": False}},
    # Traces to a collector (Triton's over OTLP/HTTP), the Grafana dashboard and the alert rules.
    "observability": {"tracing": {"otlpEndpoint": "http://otel-collector.observability:4317", "sampleRatio": 0.25,
                                  "tritonUrl": "http://otel-collector.observability:4318/v1/traces"},
                      "dashboard": {"enabled": True}, "prometheusRule": {"enabled": True, "p99Seconds": 0.3}},
}


@dataclass(frozen=True)
class Manifest:
    template: str
    doc: dict[str, Any]

    @property
    def kind(self) -> str:
        return self.doc["kind"]

    @property
    def name(self) -> str:
        return self.doc["metadata"]["name"]


def chart() -> helm_python.Chart:
    """A freshly loaded chart: rendering processes (mutates) its dependency list."""
    return helm_python.Chart.load(CHART)


def render_raw(values: dict[str, Any] | None = None) -> dict[str, str]:
    """Template path -> rendered text, as `helm template` (install) renders it."""
    return chart().render(copy.deepcopy(values or {}), name=RELEASE, namespace=NAMESPACE, is_install=True)


GENERATED = "mmsearch/templates/signing-keys.yaml"
DRAWN = base64.b64encode(b"<random>").decode()
"""What :func:`stable` writes for each drawn key (base64, as Secret data is)."""
_DRAWN = re.compile(r'^(  [-a-z]+: )"[A-Za-z0-9+/=]+"$', re.M)


def stable(rendered: dict[str, str]) -> dict[str, str]:
    """``rendered`` with the drawn signing keys written as :data:`DRAWN` (every other template as rendered)."""
    return {t: _DRAWN.sub(rf'\1"{DRAWN}"', text) if t == GENERATED else text for t, text in rendered.items()}


@lru_cache(maxsize=None)
def _render_set(name: str) -> tuple[Manifest, ...]:
    out = []
    for template, text in sorted(stable(render_raw(VALUE_SETS[name])).items()):
        if template.endswith("NOTES.txt"):
            continue
        out.extend(Manifest(template, doc) for doc in yaml.safe_load_all(text) if doc)
    return tuple(out)


def manifests(value_set: str) -> list[Manifest]:
    """The parsed objects of one value set (NOTES.txt left out)."""
    return list(_render_set(value_set))


def notes(value_set: str) -> str:
    return next(t for p, t in render_raw(VALUE_SETS[value_set]).items() if p.endswith("NOTES.txt"))


def template_output(value_set: str) -> str:
    """`helm template`-style text: every non-empty template, sorted by path, with a Source header."""
    parts = []
    for template, text in sorted(stable(render_raw(VALUE_SETS[value_set])).items()):
        if template.endswith("NOTES.txt") or not text.strip():
            continue
        parts.append(f"---\n# Source: {template}\n{text.strip()}\n")
    return "".join(parts)


def of_kind(items: list[Manifest], kind: str) -> list[Manifest]:
    return [m for m in items if m.kind == kind]


def component(m: Manifest) -> str:
    return m.doc["metadata"]["labels"]["app.kubernetes.io/component"]


def pod_spec(m: Manifest) -> dict[str, Any]:
    return m.doc["spec"] if m.kind == "Pod" else m.doc["spec"]["template"]["spec"]


def pod_labels(m: Manifest) -> dict[str, str]:
    return m.doc["metadata"]["labels"] if m.kind == "Pod" else m.doc["spec"]["template"]["metadata"]["labels"]


def workloads(items: list[Manifest]) -> list[Manifest]:
    return [m for m in items if m.kind in ("Deployment", "Pod")]


def deployment(items: list[Manifest], name: str) -> Manifest:
    found = [m for m in of_kind(items, "Deployment") if component(m) == name]
    assert len(found) == 1, f"expected one {name} Deployment, found {len(found)}"
    return found[0]


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Variable name -> its EnvVar entry; duplicates are an error."""
    names = [e["name"] for e in container.get("env", [])]
    dupes = sorted({n for n in names if names.count(n) > 1})
    assert not dupes, f"container {container['name']} sets {dupes} more than once"
    return {e["name"]: e for e in container.get("env", [])}


def containers(m: Manifest) -> Iterator[dict[str, Any]]:
    spec = pod_spec(m)
    yield from spec.get("initContainers", [])
    yield from spec["containers"]
