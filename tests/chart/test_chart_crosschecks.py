"""Cross-checks that catch real mistakes in the rendered chart.

Selectors against labels, probe and Service ports against container ports,
every MMSEARCH_ variable against the settings class of the service that reads
it, the Triton arguments against the repository layout the export writes,
security and RBAC, and who may talk to whom under the NetworkPolicies.
"""
from __future__ import annotations

import importlib
import inspect
import pkgutil
from typing import Any

import pytest
import typer

from tests.chart import charttools as ct
from tests.support.certs import Ca

SETS = sorted(ct.VALUE_SETS)

# The settings class of each service the chart runs (module, class).
SETTINGS = {
    "preprocess": ("mmsearch.services.preprocess.settings", "PreprocessSettings"),
    "serving": ("mmsearch.services.serving.config.settings", "ServingSettings"),
    "web": ("mmsearch.services.web.settings", "WebSettings"),
    "writer": ("mmsearch.services.writer.settings", "WriterSettings"),
}
# Variables every process that reads artifacts has besides its own settings class: the artifact
# cache and the S3 endpoint (mmsearch.core.artifacts.ArtifactSettings).
COMMON_RUNTIME_VARS = {"MMSEARCH_CACHE_DIR", "MMSEARCH_S3_ENDPOINT_URL"}


OPTIONAL = {"writer"}  # deployed only where its value set enables it


def deployed(value_set: str, service: str) -> bool:
    return service not in OPTIONAL or any(ct.component(m) == service
                                          for m in ct.of_kind(ct.manifests(value_set), "Deployment"))


SERVICE_SETS = [(service, value_set) for service in sorted(SETTINGS) for value_set in SETS
                if deployed(value_set, service)]


def settings_class(service: str):
    module, name = SETTINGS[service]
    return getattr(importlib.import_module(module), name)


def settings_vars(cls) -> dict[str, Any]:
    """Every variable ``cls`` reads (its groups' too) and its field."""
    from mmsearch.core.settings import variables

    return {var.name: var.field for var in variables(cls)}


# ---------------------------------------------------------------- selectors and ports


@pytest.mark.parametrize("value_set", SETS)
def test_every_service_selects_exactly_one_deployment(value_set):
    items = ct.manifests(value_set)
    deployments = ct.of_kind(items, "Deployment")
    for svc in ct.of_kind(items, "Service"):
        selector = svc.doc["spec"]["selector"]
        matched = [d for d in deployments if selector.items() <= ct.pod_labels(d).items()]
        assert len(matched) == 1, f"Service {svc.name} selects {[d.name for d in matched]}"
        assert selector == matched[0].doc["spec"]["selector"]["matchLabels"], svc.name


@pytest.mark.parametrize("value_set", SETS)
def test_deployment_selectors_match_their_pod_labels_and_are_disjoint(value_set):
    deployments = ct.of_kind(ct.manifests(value_set), "Deployment")
    for d in deployments:
        selector = d.doc["spec"]["selector"]["matchLabels"]
        assert selector.items() <= ct.pod_labels(d).items(), d.name
        others = [o.name for o in deployments if o is not d and selector.items() <= ct.pod_labels(o).items()]
        assert not others, f"{d.name}'s selector also matches {others}"


def _container_ports(container: dict) -> tuple[set[str], set[int]]:
    ports = container.get("ports", [])
    return {p["name"] for p in ports if "name" in p}, {p["containerPort"] for p in ports}


def _assert_declared(port, names: set[str], numbers: set[int], where: str) -> None:
    if isinstance(port, str):
        assert port in names, f"{where}: port name {port!r} is not a declared containerPort {sorted(names)}"
    else:
        assert port in numbers, f"{where}: port {port} is not a declared containerPort {sorted(numbers)}"


@pytest.mark.parametrize("value_set", SETS)
def test_every_probe_port_is_a_declared_container_port(value_set):
    probes_seen = 0
    for w in ct.workloads(ct.manifests(value_set)):
        for c in ct.containers(w):
            names, numbers = _container_ports(c)
            for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
                probe = c.get(kind)
                if not probe:
                    continue
                handler = next(probe[h] for h in ("grpc", "httpGet", "tcpSocket") if h in probe)
                _assert_declared(handler["port"], names, numbers, f"{w.name}/{c['name']} {kind}")
                probes_seen += 1
    assert probes_seen


@pytest.mark.parametrize("value_set", SETS)
def test_every_service_target_port_is_a_declared_container_port(value_set):
    items = ct.manifests(value_set)
    for svc in ct.of_kind(items, "Service"):
        (target,) = [d for d in ct.of_kind(items, "Deployment") if svc.doc["spec"]["selector"].items() <= ct.pod_labels(d).items()]
        names, numbers = set(), set()
        for c in ct.containers(target):
            n, p = _container_ports(c)
            names |= n
            numbers |= p
        for port in svc.doc["spec"]["ports"]:
            _assert_declared(port.get("targetPort", port["port"]), names, numbers, f"Service {svc.name}")


@pytest.mark.parametrize("value_set", SETS)
def test_grpc_services_use_native_grpc_probes_or_their_metrics_port_with_tls_and_web_http_probes(value_set):
    """The kubelet's gRPC probe cannot speak TLS: with TLS on, the metrics port's /readyz and /healthz."""
    values = ct.chart().merge_values(ct.VALUE_SETS[value_set])
    tls = values["tls"]["enabled"]
    items = ct.manifests(value_set)
    for name in ("preprocess", "serving"):
        (c,) = ct.pod_spec(ct.deployment(items, name))["containers"]
        for kind in ("startupProbe", "readinessProbe", "livenessProbe"):
            if tls:
                path = "/healthz" if kind == "livenessProbe" else "/readyz"
                assert c[kind]["httpGet"] == {"path": path, "port": "metrics"}, f"{name} {kind}"
            else:
                assert "grpc" in c[kind], f"{name} {kind}"
    (web,) = ct.pod_spec(ct.deployment(items, "web"))["containers"]
    assert web["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert web["livenessProbe"]["httpGet"]["path"] == "/healthz"
    scheme = "HTTPS" if values["tls"]["web"]["https"] else "HTTP"
    assert {web[k]["httpGet"].get("scheme", "HTTP") for k in ("readinessProbe", "livenessProbe")} == {scheme}


# ---------------------------------------------------------------- settings


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_settings_classes_exist_and_share_the_common_base(service):
    from mmsearch.core.limits import RequestLimits
    from mmsearch.services.runtime.settings import ProcessSettings

    assert issubclass(settings_class(service), ProcessSettings)
    # one set of request limits for every layer
    assert issubclass(settings_class(service).model_fields["limits"].annotation, RequestLimits)


def test_common_runtime_vars_are_the_artifact_settings():
    from mmsearch.core.artifacts import ArtifactSettings

    assert set(settings_vars(ArtifactSettings)) == COMMON_RUNTIME_VARS


@pytest.mark.parametrize(("service", "value_set"), SERVICE_SETS)
def test_every_mmsearch_var_is_a_setting_of_its_service_and_required_ones_are_set(service, value_set):
    cls = settings_class(service)
    fields = settings_vars(cls)
    (container,) = ct.pod_spec(ct.deployment(ct.manifests(value_set), service))["containers"]
    env = ct.env_of(container)
    chart_vars = {n for n in env if n.startswith("MMSEARCH_")}
    unknown = sorted(chart_vars - set(fields) - set(COMMON_RUNTIME_VARS))
    assert not unknown, f"{service}: the chart sets {unknown}, which {cls.__name__} does not read"
    required = {n for n, f in fields.items() if f.is_required()}
    assert required <= chart_vars, f"{service}: required settings not set by the chart: {sorted(required - chart_vars)}"


@pytest.mark.parametrize(("service", "value_set"), SERVICE_SETS)
def test_the_values_the_chart_sets_load_in_the_settings_class(service, value_set, monkeypatch, tmp_path):
    """Every literal value parses (ports, booleans, the MMSEARCH_MODELS JSON ...)."""
    from mmsearch.core.settings import load_settings

    cls = settings_class(service)
    (container,) = ct.pod_spec(ct.deployment(ct.manifests(value_set), service))["containers"]
    import os

    mounts = [m["mountPath"] for m in container.get("volumeMounts", [])]
    leaf = Ca.make("chart test CA").leaf()
    files = {"tls.crt": leaf.cert, "tls.key": leaf.key, "ca.crt": leaf.ca}  # cert-manager's names
    for name in [n for n in os.environ if n.startswith("MMSEARCH_")]:
        monkeypatch.delenv(name)
    for name, entry in ct.env_of(container).items():
        if name.startswith("MMSEARCH_") and name in settings_vars(cls):
            # A Secret's value is not known here; any non-empty text (as long as a key must be) stands for it.
            value = entry.get("value", "from-secret-0123456789abcdef")
            if any(value.startswith(f"{m}/") for m in mounts):  # a file of a mounted Secret: one here stands for it
                path = tmp_path / value.lstrip("/")
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_bytes(files.get(path.name, b"from-secret\n"))
                value = str(path)
            monkeypatch.setenv(name, value)
    settings = load_settings(cls)
    assert settings.port == container["ports"][0]["containerPort"]


def test_serving_is_pointed_at_triton_only_when_triton_is_enabled():
    on = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("default"), "serving"))["containers"][0])
    off = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("no-triton"), "serving"))["containers"][0])
    assert on["MMSEARCH_TRITON_ADDRESS"]["value"] == "rel-mmsearch-triton:8001"
    assert "MMSEARCH_TRITON_ADDRESS" not in off
    assert not [m for m in ct.manifests("no-triton") if ct.component(m) == "triton"]
    # Without Triton, serving embeds the same models from the same repository.
    assert off["MMSEARCH_MODEL_REPOSITORY"] == on["MMSEARCH_MODEL_REPOSITORY"]


@pytest.mark.parametrize(("value_set", "backend"), [("default", "triton"), ("no-triton", "embedded")])
def test_experiment_config_loads_in_serving_and_uses_the_right_backend(value_set, backend):
    from mmsearch.services.serving.config.experiments import parse_config

    (cm,) = [m for m in ct.of_kind(ct.manifests(value_set), "ConfigMap") if "experiments.yaml" in m.doc["data"]]
    config = parse_config(cm.doc["data"]["experiments.yaml"], source=cm.name)
    arms = [arm for scene in config.scenes.values() for arm in scene.arms.values()]
    assert arms and all(arm.encoder_backend == backend for arm in arms)


def test_experiment_config_is_mounted_as_a_directory_and_reloaded_not_restarted():
    items = ct.manifests("default")
    serving = ct.deployment(items, "serving")
    spec = ct.pod_spec(serving)
    (container,) = spec["containers"]
    (cm,) = [m for m in ct.of_kind(items, "ConfigMap") if "experiments.yaml" in m.doc["data"]]
    (volume,) = [v for v in spec["volumes"] if v.get("configMap", {}).get("name") == cm.name]
    (mount,) = [v for v in container["volumeMounts"] if v["name"] == volume["name"]]
    assert "subPath" not in mount, "a subPath mount never sees ConfigMap updates"
    path = ct.env_of(container)["MMSEARCH_EXPERIMENTS"]["value"]
    assert path == f"{mount['mountPath']}/experiments.yaml"
    annotations = serving.doc["spec"]["template"]["metadata"].get("annotations", {})
    assert not [k for k in annotations if k.startswith("checksum/")], "serving reloads the config: no restart on change"


@pytest.mark.parametrize(("client", "variable", "server"), [("web", "MMSEARCH_SERVING_ADDRESS", "serving"),
                                                             ("serving", "MMSEARCH_PREPROCESS_ADDRESS", "preprocess")])
def test_clients_reach_every_replica_through_a_headless_service(client, variable, server):
    """gRPC balances over the addresses a name resolves to: a ClusterIP Service's one address pinned each
    client connection to one pod; the headless Service's DNS name gives every ready pod's."""
    items = ct.manifests("default")
    env = ct.env_of(ct.pod_spec(ct.deployment(items, client))["containers"][0])
    target = ct.deployment(items, server)
    port = ct.pod_spec(target)["containers"][0]["ports"][0]["containerPort"]
    assert env[variable]["value"] == f"dns:///rel-mmsearch-{server}-headless:{port}"
    (headless,) = [s for s in ct.of_kind(items, "Service") if s.name == f"rel-mmsearch-{server}-headless"]
    assert headless.doc["spec"]["clusterIP"] == "None"
    assert headless.doc["spec"]["selector"] == target.doc["spec"]["selector"]["matchLabels"]
    assert [(p["name"], p["port"]) for p in headless.doc["spec"]["ports"]] == [("grpc", port)]


def test_web_serves_metrics_apart_from_its_public_port():
    """/metrics was once on web's public HTTP port (and so behind the Ingress)."""
    items = ct.manifests("full")
    (container,) = ct.pod_spec(ct.deployment(items, "web"))["containers"]
    env = ct.env_of(container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert env["MMSEARCH_METRICS_PORT"]["value"] == str(ports["metrics"]) and ports["metrics"] != ports["http"]
    assert env["MMSEARCH_PORT"]["value"] == str(ports["http"])
    assert "MMSEARCH_REFLECTION" not in env, "web is no gRPC server"
    services = {s.name: s.doc["spec"] for s in ct.of_kind(items, "Service") if ct.component(s) == "web"}
    # The public Service (it may be a LoadBalancer) carries the page's port only; /metrics has a ClusterIP
    # Service of its own for the ServiceMonitor, which no Ingress names.
    assert {n: {p["name"]: p["targetPort"] for p in s["ports"]} for n, s in services.items()} == {
        "rel-mmsearch-web": {"http": "http"}, "rel-mmsearch-web-metrics": {"metrics": "metrics"}}
    assert services["rel-mmsearch-web-metrics"]["type"] == "ClusterIP"
    (ingress,) = ct.of_kind(items, "Ingress")
    backends = [p["backend"]["service"] for r in ingress.doc["spec"]["rules"] for p in r["http"]["paths"]]
    assert backends and all(b == {"name": "rel-mmsearch-web", "port": {"name": "http"}} for b in backends)
    (policy,) = [p for p in ct.of_kind(items, "NetworkPolicy") if ct.component(p) == "web"]
    scrape = [r for r in policy.doc["spec"]["ingress"] if r["ports"] == [{"port": "metrics", "protocol": "TCP"}]]
    assert [r["from"] for r in scrape] == [ct.VALUE_SETS["full"]["networkPolicy"]["metricsFrom"]]


# ---------------------------------------------------------------- Triton and the model repository


def _triton(value_set: str) -> dict:
    return ct.pod_spec(ct.deployment(ct.manifests(value_set), "triton"))["containers"][0]


def _args(container: dict) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for arg in container["args"]:
        key, _, value = arg.partition("=")
        out.setdefault(key, []).append(value)
    return out


@pytest.mark.parametrize("value_set", [s for s in SETS if s != "no-triton"])
def test_triton_args_point_at_the_repository_layout_export_writes(value_set):
    values = ct.chart().merge_values(ct.VALUE_SETS[value_set])
    repo = values["modelRepository"]["uri"].rstrip("/")
    models = values["modelRepository"]["models"]
    items = ct.manifests(value_set)
    triton = _triton(value_set)
    args = _args(triton)
    assert triton["command"] == ["tritonserver"]
    assert args["--model-control-mode"] == ["explicit"]
    assert args["--load-model"] == models
    # The exported config.pbtxt is complete: Triton must not rewrite it.
    assert args["--disable-auto-complete-config"] == ["true"]
    (repository,) = args["--model-repository"]
    endpoint = values["modelRepository"]["s3"]["endpointUrl"]
    if endpoint:  # Triton's form for a custom S3 endpoint: s3://[https://]host:port/bucket/prefix
        scheme, _, hostport = endpoint.rstrip("/").partition("://")
        assert repository == f"s3://{'https://' if scheme == 'https' else ''}{hostport}/{repo.removeprefix('s3://')}"
    else:
        assert repository == repo
    # Preprocess reads REPO/NAME/tokenizer.json (or preprocessor_config.json) of the same models,
    # serving's embedded encoder REPO/NAME/1/model.onnx: the same REPO, the same names.
    pre = ct.env_of(ct.pod_spec(ct.deployment(items, "preprocess"))["containers"][0])
    import json

    assert json.loads(pre["MMSEARCH_MODELS"]["value"]) == {m: f"{repo}/{m}" for m in models}
    serving = ct.env_of(ct.pod_spec(ct.deployment(items, "serving"))["containers"][0])
    assert serving["MMSEARCH_MODEL_REPOSITORY"]["value"] == repo
    ports = {p["name"]: p["containerPort"] for p in triton["ports"]}
    assert ports == {"http": 8000, "grpc": 8001, "metrics": 8002}
    assert args["--http-port"] == ["8000"] and args["--grpc-port"] == ["8001"] and args["--metrics-port"] == ["8002"]
    assert triton["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert triton["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"


def test_triton_s3_credentials_come_from_the_existing_secret():
    env = ct.env_of(_triton("triton-gpu"))
    assert env["AWS_ACCESS_KEY_ID"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "access-key"}
    assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {"name": "s3-creds", "key": "secret-key"}
    assert "AWS_ACCESS_KEY_ID" not in ct.env_of(_triton("default")), "no Secret named: the pod's cloud identity"


def test_gpu_is_requested_only_when_enabled():
    assert _triton("triton-gpu")["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert "nvidia.com/gpu" not in _triton("default")["resources"].get("limits", {})
    spec = ct.pod_spec(ct.deployment(ct.manifests("triton-gpu"), "triton"))
    assert spec["tolerations"][0]["key"] == "nvidia.com/gpu"


# ---------------------------------------------------------------- Milvus / MongoDB wiring


def test_databases_external_by_default_and_from_subcharts_when_enabled():
    default = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("default"), "serving"))["containers"][0])
    assert default["MMSEARCH_MILVUS_URI"]["value"] == "http://milvus:19530"
    assert default["MMSEARCH_MONGO_URI"]["value"] == "mongodb://mongodb:27017"
    deps = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("dependencies"), "serving"))["containers"][0])
    assert deps["MMSEARCH_MILVUS_URI"]["value"] == "http://rel-milvus:19530"
    names = list(deps)
    # $(VAR) expansion needs the password variable defined first.
    assert names.index("MONGODB_ROOT_PASSWORD") < names.index("MMSEARCH_MONGO_URI")
    assert "$(MONGODB_ROOT_PASSWORD)@rel-mongodb:27017" in deps["MMSEARCH_MONGO_URI"]["value"]
    full = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("full"), "serving"))["containers"][0])
    assert full["MMSEARCH_MONGO_URI"]["valueFrom"]["secretKeyRef"] == {"name": "mongo-creds", "key": "mongodb-uri"}
    assert full["MMSEARCH_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {"name": "milvus-creds", "key": "milvus-token"}


def test_page_depth_is_a_value_and_the_page_token_key_comes_from_a_secret():
    default = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("default"), "serving"))["containers"][0])
    assert default["MMSEARCH_MAX_PAGE_DEPTH"] == {"name": "MMSEARCH_MAX_PAGE_DEPTH", "value": "1000"}
    assert default["MMSEARCH_PAGE_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"] == {
        "name": "rel-mmsearch-signing-keys", "key": "page-token-key"}, "no Secret named: the one the chart draws"
    full = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("full"), "serving"))["containers"][0])
    assert full["MMSEARCH_MAX_PAGE_DEPTH"]["value"] == "5000"
    assert full["MMSEARCH_PAGE_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"] == {"name": "paging-key",
                                                                               "key": "page-token-key"}


@pytest.mark.parametrize("value_set", SETS)
def test_no_secret_is_a_value_and_no_credential_is_a_literal(value_set):
    """The one Secret the chart writes holds the signing keys it draws itself (never a value)."""
    items = ct.manifests(value_set)
    for secret in ct.of_kind(items, "Secret"):
        assert secret.name == "rel-mmsearch-signing-keys", f"the chart renders Secret {secret.name}"
        assert set(secret.doc["data"].values()) == {ct.DRAWN}, "its keys are drawn at install, not values"
    for w in ct.workloads(items):
        for c in ct.containers(w):
            for name, entry in ct.env_of(c).items():
                if any(word in name for word in ("PASSWORD", "SECRET", "TOKEN", "ACCESS_KEY")):
                    assert "valueFrom" in entry, f"{w.name}/{c['name']}: {name} must come from a Secret"


# ---------------------------------------------------------------- security


@pytest.mark.parametrize("value_set", SETS)
def test_every_pod_is_locked_down(value_set):
    for w in ct.workloads(ct.manifests(value_set)):
        spec = ct.pod_spec(w)
        pod = spec["securityContext"]
        assert pod["runAsNonRoot"] is True and pod["runAsUser"] > 0, w.name
        assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, w.name
        for c in ct.containers(w):
            sc = c["securityContext"]
            assert sc["readOnlyRootFilesystem"] is True, (w.name, c["name"])
            assert sc["allowPrivilegeEscalation"] is False, (w.name, c["name"])
            assert sc["capabilities"]["drop"] == ["ALL"], (w.name, c["name"])
            assert sc.get("privileged", False) is False
            assert c["resources"].get("requests"), f"{w.name}/{c['name']} has no resource requests"
            if w.kind == "Deployment":
                mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts", [])}
                assert "/tmp" in mounts, f"{w.name}: a read-only root needs an emptyDir on /tmp"
                (vol,) = [v for v in spec["volumes"] if v["name"] == mounts["/tmp"]]
                assert "emptyDir" in vol


@pytest.mark.parametrize("value_set", SETS)
def test_only_the_operator_gets_an_api_token(value_set):
    for w in ct.workloads(ct.manifests(value_set)):
        if ct.component(w) != "operator":
            assert ct.pod_spec(w)["automountServiceAccountToken"] is False, w.name


# ---------------------------------------------------------------- operator and RBAC


def _rules(value_set: str) -> tuple[str, list[dict]]:
    items = ct.manifests(value_set)
    roles = [m for m in items if m.kind in ("Role", "ClusterRole")]
    assert len(roles) == 1
    return roles[0].kind, roles[0].doc["rules"]


def test_operator_runs_one_replica_recreate_namespaced_by_default():
    items = ct.manifests("default")
    op = ct.deployment(items, "operator")
    assert op.doc["spec"]["replicas"] == 1 and op.doc["spec"]["strategy"] == {"type": "Recreate"}
    env = ct.env_of(ct.pod_spec(op)["containers"][0])
    assert env["MMSEARCH_OPERATOR_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    kind, _ = _rules("default")
    assert kind == "Role"
    (binding,) = ct.of_kind(items, "RoleBinding")
    assert binding.doc["subjects"][0]["name"] == ct.pod_spec(op)["serviceAccountName"]


def test_cluster_wide_operator_gets_a_cluster_role_and_watches_every_namespace():
    items = ct.manifests("cluster-wide")
    kind, _ = _rules("cluster-wide")
    assert kind == "ClusterRole"
    (binding,) = ct.of_kind(items, "ClusterRoleBinding")
    assert binding.doc["roleRef"]["kind"] == "ClusterRole"
    assert binding.name.startswith("search-"), "cluster-scoped names carry the namespace"
    env = ct.env_of(ct.pod_spec(ct.deployment(items, "operator"))["containers"][0])
    assert "MMSEARCH_OPERATOR_NAMESPACE" not in env


@pytest.mark.parametrize("value_set", ["default", "cluster-wide"])
def test_operator_rbac_is_least_privilege(value_set):
    _, rules = _rules(value_set)
    granted = {(g, r, v) for rule in rules for g in rule["apiGroups"] for r in rule["resources"] for v in rule["verbs"]}
    assert not [x for x in granted if "*" in x], "no wildcards"
    assert not [x for x in granted if x[1] in ("secrets", "configmaps")], "the operator never reads Secrets"
    resources = {(g, r) for g, r, _ in granted}
    assert resources == {
        ("mmsearch.io", "indexjobs"), ("mmsearch.io", "indexjobs/status"), ("batch", "jobs"),
        ("", "pods"), ("", "events"), ("events.k8s.io", "events"),
    }
    verbs = lambda g, r: {v for gg, rr, v in granted if (gg, rr) == (g, r)}  # noqa: E731
    assert verbs("", "pods") == {"get", "list", "watch"}, "pods are read only"
    assert verbs("batch", "jobs") >= {"create", "get", "list", "watch"}
    assert {"patch"} <= verbs("mmsearch.io", "indexjobs/status")


def _operator_env_vars() -> set[str]:
    """What `mmsearch operator` reads: its typer options' env vars and the operator package's settings fields."""
    from mmsearch.cli import app
    from mmsearch.core.settings import BaseConfig

    command = typer.main.get_command(app).commands["operator"]
    names = {e for p in command.params for e in ([p.envvar] if isinstance(p.envvar, str) else p.envvar or [])}
    import mmsearch.operator

    for info in pkgutil.iter_modules(mmsearch.operator.__path__, "mmsearch.operator."):
        module = importlib.import_module(info.name)
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if issubclass(cls, BaseConfig) and cls.__module__ == module.__name__:
                names |= set(settings_vars(cls))
    return names


def test_operator_env_vars_are_read_by_the_operator():
    env = ct.env_of(ct.pod_spec(ct.deployment(ct.manifests("default"), "operator"))["containers"][0])
    unknown = sorted({n for n in env if n.startswith("MMSEARCH_")} - _operator_env_vars())
    assert not unknown, f"the chart sets {unknown} on the operator, which `mmsearch operator` does not read"


# ---------------------------------------------------------------- container commands


def _cli_command(args: list[str]):
    """Resolve `mmsearch <args>` to the click command it runs; fail naming the missing part."""
    from mmsearch.cli import app

    command = typer.main.get_command(app)
    for i, word in enumerate(args):
        sub = getattr(command, "commands", {}).get(word)
        assert sub is not None, f"`mmsearch {' '.join(args[: i + 1])}` is not a command"
        command = sub
    return command


@pytest.mark.parametrize("value_set", ["default", "full"])
def test_every_container_command_is_a_real_mmsearch_command(value_set):
    image_repo = ct.chart().merge_values(ct.VALUE_SETS[value_set])["image"]["repository"]
    seen = set()
    for d in ct.of_kind(ct.manifests(value_set), "Deployment"):
        for c in ct.containers(d):
            if not c["image"].startswith(image_repo):
                continue
            assert "command" not in c, "the image's entry point is `mmsearch`"
            _cli_command(c["args"])
            seen.add(tuple(c["args"]))
    writer = {("serve", "writer")} if value_set == "full" else set()  # the writer is off by default
    assert seen == {("serve", "preprocess"), ("serve", "serving"), ("serve", "web"), ("operator",), *writer}


@pytest.mark.parametrize("module", ["mmsearch.services.preprocess.main", "mmsearch.services.serving.main", "mmsearch.services.web.main", "mmsearch.operator.main"])
def test_the_modules_the_commands_start_exist(module):
    assert hasattr(importlib.import_module(module), "main"), f"{module} has no main()"


# ---------------------------------------------------------------- HPA / PDB


def test_hpa_owns_the_replica_count_and_targets_the_deployment():
    items = ct.manifests("full")
    hpas = {ct.component(h): h for h in ct.of_kind(items, "HorizontalPodAutoscaler")}
    assert set(hpas) == {"preprocess", "serving", "web"}
    for name, hpa in hpas.items():
        d = ct.deployment(items, name)
        assert "replicas" not in d.doc["spec"], f"{name}: the HPA, not the Deployment, sets replicas"
        assert hpa.doc["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": d.name}
        assert hpa.doc["apiVersion"] == "autoscaling/v2"


def test_pdbs_select_their_component():
    items = ct.manifests("full")
    pdbs = {ct.component(p): p for p in ct.of_kind(items, "PodDisruptionBudget")}
    assert set(pdbs) == {"preprocess", "serving", "web", "triton"}
    for name, pdb in pdbs.items():
        assert pdb.doc["spec"]["selector"]["matchLabels"] == ct.deployment(items, name).doc["spec"]["selector"]["matchLabels"]
    assert pdbs["serving"].doc["spec"] == {**pdbs["serving"].doc["spec"], "minAvailable": 1}


# ---------------------------------------------------------------- NetworkPolicy semantics


def _port_matches(rule_ports, port: int, port_name: str) -> bool:
    return not rule_ports or any(p.get("port") in (port, port_name) for p in rule_ports)


def _peer_matches(peers, labels: dict[str, str] | None) -> bool:
    """labels None: an address outside the cluster's pods (matched by ipBlock or an absent `from`/`to`)."""
    if peers is None:
        return True
    for peer in peers:
        if labels is None:
            if "ipBlock" in peer:
                return True
            continue
        if "podSelector" in peer and "namespaceSelector" not in peer:
            if peer["podSelector"].get("matchLabels", {}).items() <= labels.items():
                return True
    return False


def _allowed(items, src: str | None, dst: str | None, port: int, port_name: str) -> bool:
    """Would traffic src -> dst:port pass both sides' policies? (None: outside the release)."""
    policies = ct.of_kind(items, "NetworkPolicy")
    labels = {ct.component(d): ct.pod_labels(d) for d in ct.of_kind(items, "Deployment")}

    def selected(name):
        return [p for p in policies if name and p.doc["spec"]["podSelector"]["matchLabels"].items() <= labels[name].items()]

    for pol in selected(src):
        if not any(_port_matches(r.get("ports"), port, port_name) and _peer_matches(r.get("to"), labels.get(dst)) for r in pol.doc["spec"].get("egress", [])):
            return False
    for pol in selected(dst):
        if not any(_port_matches(r.get("ports"), port, port_name) and _peer_matches(r.get("from"), labels.get(src)) for r in pol.doc["spec"].get("ingress", [])):
            return False
    return True


def test_network_policy_lets_only_web_serving_preprocess_triton_writer_talk():
    items = ct.manifests("full")
    assert {ct.component(p) for p in ct.of_kind(items, "NetworkPolicy")} == {"web", "serving", "preprocess", "triton",
                                                                              "writer"}
    grpc = {"serving": 50052, "preprocess": 50051, "triton": 8001, "writer": 50053}
    assert _allowed(items, "web", "writer", grpc["writer"], "grpc")  # /api/documents
    assert _allowed(items, "writer", None, 19530, "") and _allowed(items, "writer", None, 27017, "")
    assert _allowed(items, "writer", None, 443, "")  # the document towers from the model repository
    assert not _allowed(items, "serving", "writer", grpc["writer"], "grpc")
    assert not _allowed(items, None, "writer", grpc["writer"], "grpc")
    # The allowed path.
    assert _allowed(items, "web", "serving", grpc["serving"], "grpc")
    assert _allowed(items, "serving", "preprocess", grpc["preprocess"], "grpc")
    assert _allowed(items, "serving", "triton", grpc["triton"], "grpc")
    assert _allowed(items, "serving", None, 19530, "")  # Milvus
    assert _allowed(items, "serving", None, 27017, "")  # MongoDB
    assert _allowed(items, "preprocess", None, 443, "")  # S3 model repository
    assert _allowed(items, "triton", None, 443, "")
    # Everything else is refused.
    assert not _allowed(items, "web", "preprocess", grpc["preprocess"], "grpc")
    assert not _allowed(items, "web", "triton", grpc["triton"], "grpc")
    assert not _allowed(items, "preprocess", "serving", grpc["serving"], "grpc")
    assert not _allowed(items, "triton", "preprocess", grpc["preprocess"], "grpc")
    assert not _allowed(items, "operator", "serving", grpc["serving"], "grpc")
    assert not _allowed(items, None, "serving", grpc["serving"], "grpc")
    assert not _allowed(items, "web", None, 27017, "")
    assert not _allowed(items, "preprocess", None, 27017, "")
    assert not _allowed(items, "triton", None, 19530, "")


def test_image_tower_names_follow_the_export():
    """The chart lists a CLIP image tower as the export names it (REPO/NAME-image)."""
    from mmsearch.jobs.export import tower_name

    models = ct.chart().merge_values(ct.VALUE_SETS["triton-gpu"])["modelRepository"]["models"]
    assert tower_name("clip", "image") in models and tower_name("clip", "text") in models
