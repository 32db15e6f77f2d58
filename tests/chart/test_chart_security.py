"""The chart's API keys, signing keys and TLS: every Secret reference resolves to what a pod reads, the
safe defaults (anonymous off, one drawn signing key per release), certificates that name what their
clients dial, and no key or certificate ever taken as a value."""
from __future__ import annotations

import base64
import re
from typing import Any

import helm_python
import jsonschema
import pytest
import yaml

from tests.chart import charttools as ct

SETS = sorted(ct.VALUE_SETS)
SECURE = ["secure", "secure-secrets"]
A_KEY = "mms_0123456789ab_" + "A" * 43
A_CERT = "-----BEGIN CERTIFICATE-----\nMIIB...\n-----END CERTIFICATE-----\n"


def _values(value_set: str) -> dict[str, Any]:
    return ct.chart().merge_values(ct.VALUE_SETS[value_set])


def _env(items, component: str) -> dict[str, dict]:
    (container,) = ct.pod_spec(ct.deployment(items, component))["containers"]
    return ct.env_of(container)


def _named_secrets(values: Any) -> set[str]:
    """Every Secret name a value set gives (keys named existingSecret anywhere)."""
    if isinstance(values, dict):
        return {v for k, v in values.items() if k == "existingSecret" and v} | {
            n for v in values.values() for n in _named_secrets(v)}
    if isinstance(values, list):
        return {n for v in values for n in _named_secrets(v)}
    return set()


# ---------------------------------------------------------------- every reference resolves


@pytest.mark.parametrize("value_set", SETS)
def test_every_secret_reference_is_one_the_chart_makes_or_the_values_name(value_set):
    items = ct.manifests(value_set)
    made = {s.name for s in ct.of_kind(items, "Secret")} | {
        c.doc["spec"]["secretName"] for c in ct.of_kind(items, "Certificate")}
    known = made | _named_secrets(ct.VALUE_SETS[value_set]) | {"rel-mongodb"}  # the MongoDB subchart's
    for w in ct.workloads(items):
        spec = ct.pod_spec(w)
        for v in spec.get("volumes", []):
            if "secret" in v:
                assert v["secret"]["secretName"] in known, f"{w.name}: volume {v['name']}"
        for c in ct.containers(w):
            for name, entry in ct.env_of(c).items():
                ref = entry.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["name"] in known, f"{w.name}/{c['name']}: {name} names Secret {ref['name']}"


@pytest.mark.parametrize("value_set", SETS)
def test_every_file_a_setting_names_is_in_a_mounted_folder(value_set):
    """MMSEARCH_*_FILE and Triton's --grpc-*-cert/key point at a file a mounted volume holds (its items), and
    every Secret is mounted as a folder (a subPath mount never sees a rotation)."""
    for w in ct.workloads(ct.manifests(value_set)):
        spec = ct.pod_spec(w)
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in ct.containers(w):
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            for m in mounts.values():
                assert m["name"] in volumes, f"{w.name}/{c['name']}: mount of undeclared volume {m['name']}"
                if "secret" in volumes[m["name"]]:
                    assert "subPath" not in m and m.get("readOnly") is True, f"{w.name}: {m['name']}"
            paths = [e["value"] for n, e in ct.env_of(c).items() if n.endswith("_FILE") or n == "TLS_DIR"]
            paths += [a.split("=", 1)[1] for a in c.get("args", []) if re.match(r"--grpc-(server-cert|server-key|root-cert)=", a)]
            for path in paths:
                folder = max((p for p in mounts if path == p or path.startswith(p + "/")), key=len, default=None)
                assert folder, f"{w.name}/{c['name']}: {path} is in no mounted folder"
                volume = volumes[mounts[folder]["name"]]
                if path != folder and "secret" in volume:
                    held = {i["path"] for i in volume["secret"]["items"]}
                    assert path[len(folder) + 1:] in held, f"{w.name}: {path} is not one of {sorted(held)}"


# ---------------------------------------------------------------- the defaults are the safe ones


def test_the_default_release_has_anonymous_access_off_and_no_key_accepted_but_from_a_secret():
    items = ct.manifests("default")
    for component in ("web", "serving"):
        env = _env(items, component)
        assert env["MMSEARCH_ANONYMOUS_SCENES"]["value"] == "", f"{component}: anonymous access must be off"
        assert "MMSEARCH_API_KEYS_FILE" not in env
    assert "MMSEARCH_TRUSTED_PROXIES" not in _env(items, "web"), "no forwarding header believed by default"


def test_the_default_release_signs_tokens_with_one_drawn_key_pair_for_every_serving_replica():
    items = ct.manifests("default")
    assert ct.deployment(items, "serving").doc["spec"]["replicas"] > 1
    env = _env(items, "serving")
    refs = {n: env[n]["valueFrom"]["secretKeyRef"] for n in ("MMSEARCH_PAGE_TOKEN_SECRET", "MMSEARCH_FEEDBACK_KEY")}
    assert refs == {"MMSEARCH_PAGE_TOKEN_SECRET": {"name": "rel-mmsearch-signing-keys", "key": "page-token-key"},
                    "MMSEARCH_FEEDBACK_KEY": {"name": "rel-mmsearch-signing-keys", "key": "feedback-key"}}
    (secret,) = ct.of_kind(items, "Secret")
    assert secret.doc["metadata"]["annotations"] == {"helm.sh/resource-policy": "keep"}
    # As drawn: 64 random characters each, different at each render without a cluster to read them back from.
    drawn = [yaml.safe_load(ct.render_raw({})[ct.GENERATED])["data"] for _ in range(2)]
    keys = [base64.b64decode(d[k]).decode() for d in drawn for k in ("page-token-key", "feedback-key")]
    assert all(re.fullmatch(r"[A-Za-z0-9]{64}", k) for k in keys) and len(set(keys)) == 4
    # On an upgrade the template reads the installed Secret back (helm's lookup) instead of drawing again.
    template = (ct.CHART / "templates" / "signing-keys.yaml").read_text()
    assert 'lookup "v1" "Secret" .Release.Namespace $name' in template and "index $existing $key | default" in template


def test_no_signing_key_is_drawn_when_both_come_from_the_users_secrets():
    items = ct.manifests("secure-secrets")
    assert not ct.of_kind(items, "Secret")
    env = _env(items, "serving")
    assert env["MMSEARCH_PAGE_TOKEN_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "paging-key"
    assert env["MMSEARCH_FEEDBACK_KEY"]["valueFrom"]["secretKeyRef"]["name"] == "feedback-key"


# ---------------------------------------------------------------- keys


@pytest.mark.parametrize("value_set", SECURE)
def test_web_and_serving_read_the_key_file_and_only_web_holds_the_relay_key(value_set):
    values, items = _values(value_set), ct.manifests(value_set)
    access = values["access"]
    for component in ("web", "serving"):
        env = _env(items, component)
        assert env["MMSEARCH_API_KEYS_FILE"]["value"] == f"/etc/mmsearch/access/{access['keyFileKey']}"
        assert env["MMSEARCH_ANONYMOUS_SCENES"]["value"] == access["anonymousScenes"]
        volumes = {v["name"]: v for v in ct.pod_spec(ct.deployment(items, component))["volumes"]}
        assert volumes["api-keys"]["secret"]["items"] == [{"key": "keys.jsonl", "path": "keys.jsonl"}]
        assert ("relay-key" in volumes) == (component == "web"), "serving never mounts web's own key"
    web = _env(items, "web")
    relay = access["relayKey"]["existingSecret"] or access["existingSecret"]
    (volume,) = [v for v in ct.pod_spec(ct.deployment(items, "web"))["volumes"] if v["name"] == "relay-key"]
    assert volume["secret"]["secretName"] == relay
    assert web["MMSEARCH_SERVING_KEY_FILE"]["value"] == f"/etc/mmsearch/relay/{access['relayKey']['key']}"
    if access["trustedProxies"]:
        assert web["MMSEARCH_TRUSTED_PROXIES"]["value"] == ",".join(access["trustedProxies"])
    for component in ("preprocess", "triton"):
        names = [v["name"] for v in ct.pod_spec(ct.deployment(items, component))["volumes"]]
        assert "api-keys" not in names and "relay-key" not in names


# ---------------------------------------------------------------- TLS


def _host(target: str) -> str:
    return target.removeprefix("dns:///").rsplit(":", 1)[0]


@pytest.mark.parametrize("value_set", SECURE)
def test_every_hop_has_tls_and_every_certificate_names_what_its_clients_dial(value_set):
    values, items = _values(value_set), ct.manifests(value_set)
    mutual = values["tls"]["mutual"]
    secrets = {}
    for component in ("web", "serving", "preprocess"):
        env = _env(items, component)
        assert {n: env[n]["value"] for n in ("MMSEARCH_TLS_CERT_FILE", "MMSEARCH_TLS_KEY_FILE", "MMSEARCH_TLS_CA_FILE")} == {
            "MMSEARCH_TLS_CERT_FILE": "/etc/mmsearch/tls/tls.crt", "MMSEARCH_TLS_KEY_FILE": "/etc/mmsearch/tls/tls.key",
            "MMSEARCH_TLS_CA_FILE": "/etc/mmsearch/tls/ca.crt"}
        if component == "web":
            assert env["MMSEARCH_HTTPS"]["value"] == str(values["tls"]["web"]["https"]).lower()
        else:
            assert env["MMSEARCH_TLS_CLIENT_AUTH"]["value"] == str(mutual).lower()
    for component in ("web", "serving", "preprocess", "triton"):
        (volume,) = [v for v in ct.pod_spec(ct.deployment(items, component))["volumes"] if v["name"] == "tls"]
        secrets[component] = volume["secret"]["secretName"]
        assert secrets[component] == (values["tls"][component]["existingSecret"] or f"rel-mmsearch-{component}-tls")
    (triton,) = ct.pod_spec(ct.deployment(items, "triton"))["containers"]
    assert {"--grpc-use-ssl=true", f"--grpc-use-ssl-mutual={str(mutual).lower()}",
            "--grpc-server-cert=/etc/mmsearch/tls/tls.crt", "--grpc-server-key=/etc/mmsearch/tls/tls.key",
            "--grpc-root-cert=/etc/mmsearch/tls/ca.crt"} <= set(triton["args"])
    # Triton's HTTP API has no TLS: no Service carries it (the kubelet probes it on the pod).
    (service,) = [s for s in ct.of_kind(items, "Service") if s.name == "rel-mmsearch-triton"]
    assert "http" not in {p["name"] for p in service.doc["spec"]["ports"]}
    # The names the clients dial, which each server's certificate must carry.
    (hook,) = [m for m in ct.of_kind(items, "Pod") if ct.component(m) == "test"]
    dialled = {"serving": {_host(_env(items, "web")["MMSEARCH_SERVING_ADDRESS"]["value"]),
                           _host(ct.pod_spec(hook)["containers"][0]["command"][-2])},
               "preprocess": {_host(_env(items, "serving")["MMSEARCH_PREPROCESS_ADDRESS"]["value"])},
               "triton": {_host(_env(items, "serving")["MMSEARCH_TRITON_ADDRESS"]["value"])}}
    certificates = {c.doc["spec"]["secretName"]: c.doc["spec"] for c in ct.of_kind(items, "Certificate")}
    notes = ct.notes(value_set)
    for component, hosts in dialled.items():
        if secrets[component] in certificates:
            assert hosts <= set(certificates[secrets[component]]["dnsNames"]), component
        line = next(line for line in notes.splitlines() if f"Secret {secrets[component]}:" in line)
        assert all(h in line for h in hosts), f"the notes do not list {hosts} for {component}"


def test_cert_manager_certificates_serve_and_authenticate_from_the_issuer_given():
    items = ct.manifests("secure")
    certificates = {ct.component(c): c.doc["spec"] for c in ct.of_kind(items, "Certificate")}
    assert set(certificates) == {"web", "serving", "preprocess", "triton", "writer"}
    for spec in certificates.values():
        assert {"server auth", "client auth"} <= set(spec["usages"])
        assert spec["issuerRef"] == {"name": "mmsearch-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
        assert spec["privateKey"]["rotationPolicy"] == "Always"
    assert not ct.of_kind(ct.manifests("secure-secrets"), "Certificate"), "existingSecrets given: none asked for"
    assert not ct.of_kind(ct.manifests("default"), "Certificate")


# cert-manager.io/v1 Certificate, the fields this chart writes (kubernetes-validate has only the built-in API).
CERTIFICATE_SCHEMA = {
    "type": "object", "additionalProperties": False, "required": ["apiVersion", "kind", "metadata", "spec"],
    "properties": {
        "apiVersion": {"const": "cert-manager.io/v1"}, "kind": {"const": "Certificate"},
        "metadata": {"type": "object", "required": ["name", "namespace"]},
        "spec": {
            "type": "object", "additionalProperties": False,
            "required": ["secretName", "issuerRef", "dnsNames"],
            "properties": {
                "secretName": {"type": "string"},
                "duration": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(h|m|s))+$"},
                "renewBefore": {"type": "string", "pattern": "^([0-9]+(\\.[0-9]+)?(h|m|s))+$"},
                "dnsNames": {"type": "array", "minItems": 1, "items": {"type": "string"}},
                "usages": {"type": "array", "items": {"enum": [
                    "signing", "digital signature", "content commitment", "key encipherment", "key agreement",
                    "data encipherment", "cert sign", "crl sign", "encipher only", "decipher only", "any",
                    "server auth", "client auth", "code signing", "email protection", "s/mime", "ipsec end system",
                    "ipsec tunnel", "ipsec user", "timestamping", "ocsp signing", "microsoft sgc", "netscape sgc"]}},
                "privateKey": {"type": "object", "additionalProperties": False, "properties": {
                    "algorithm": {"enum": ["RSA", "ECDSA", "Ed25519"]}, "size": {"type": "integer"},
                    "rotationPolicy": {"enum": ["Never", "Always"]}}},
                "issuerRef": {"type": "object", "additionalProperties": False, "required": ["name"],
                              "properties": {"name": {"type": "string"}, "kind": {"type": "string"},
                                             "group": {"type": "string"}}},
            },
        },
    },
}


def test_certificates_match_their_schema():
    for certificate in ct.of_kind(ct.manifests("secure"), "Certificate"):
        jsonschema.validate(certificate.doc, CERTIFICATE_SCHEMA)


# ---------------------------------------------------------------- never a secret as a value


@pytest.mark.parametrize(("values", "message"), [
    ({"access": {"keys": [A_KEY]}}, "additional properties 'keys' not allowed"),
    ({"access": {"relayKey": {"key": A_KEY}}}, "/access/relayKey/key"),
    ({"access": {"relayKey": {"value": A_KEY}}}, "additional properties 'value' not allowed"),
    ({"access": {"keyFileKey": A_KEY}}, "/access/keyFileKey"),
    ({"access": {"anonymousScenes": A_KEY}}, "/access/anonymousScenes"),
    ({"access": {"existingSecret": A_KEY}}, "/access/existingSecret"),
    ({"access": {"anonymousScenes": "t2t; drop"}}, "/access/anonymousScenes"),
    ({"access": {"trustedProxies": "10.0.0.0/8"}}, "/access/trustedProxies"),
    ({"access": {"trustedProxies": ["any"]}}, "/access/trustedProxies/0"),
    ({"tls": {"serving": {"existingSecret": A_CERT}}}, "/tls/serving/existingSecret"),
    ({"tls": {"serving": {"cert": A_CERT}}}, "additional properties 'cert' not allowed"),
    ({"tls": {"ca": A_CERT}}, "additional properties 'ca' not allowed"),
    ({"tls": {"enabled": "yes"}}, "/tls/enabled"),
    ({"tls": {"certManager": {"issuerRef": {"kind": "Vault"}}}}, "/tls/certManager/issuerRef/kind"),
    ({"feedback": {"key": "0123456789abcdef0123"}}, "additional properties 'key' not allowed"),
    # the forwarding header is read from trusted proxies only: it moved next to them
    ({"feedback": {"clientIpHeader": "X-Forwarded-For"}}, "additional properties 'clientIpHeader' not allowed"),
])
def test_schema_refuses_a_key_or_certificate_given_as_a_value(values, message):
    with pytest.raises(helm_python.HelmValuesError) as err:
        ct.render_raw(values)
    assert message in str(err.value)


@pytest.mark.parametrize(("values", "message"), [
    ({"tls": {"enabled": True}},
     "tls.enabled is true but web has no certificate: set tls.web.existingSecret (a Secret with tls.crt, tls.key "
     "and ca.crt) or tls.certManager.issuerRef.name"),
    ({"tls": {"enabled": True, "web": {"existingSecret": "w"}, "serving": {"existingSecret": "s"},
              "preprocess": {"existingSecret": "p"}}}, "tls.enabled is true but triton has no certificate"),
    ({"tls": {"mutual": True}}, "tls.mutual is true but tls.enabled is false"),
    ({"tls": {"web": {"https": True}}}, "tls.web.https is true but tls.enabled is false"),
])
def test_tls_values_that_cannot_work_fail_to_render_with_a_message(values, message):
    with pytest.raises(helm_python.HelmRenderError) as err:
        ct.render_raw(values)
    assert message in str(err.value)


def test_triton_without_its_own_certificate_is_fine_when_triton_is_off():
    tls = {"enabled": True, **{c: {"existingSecret": c} for c in ("web", "serving", "preprocess")}}
    rendered = ct.render_raw({"tls": tls, "triton": {"enabled": False}})
    assert "--grpc-use-ssl" not in "".join(rendered.values())


# ---------------------------------------------------------------- metrics off the public port


@pytest.mark.parametrize("value_set", ["full", "secure"])
def test_metrics_ports_are_reached_only_from_where_prometheus_scrapes(value_set):
    items, values = ct.manifests(value_set), _values(value_set)
    metrics_from = values["networkPolicy"]["metricsFrom"]
    for policy in ct.of_kind(items, "NetworkPolicy"):
        rules = [r for r in policy.doc["spec"]["ingress"] if any(p["port"] == "metrics" for p in r["ports"])]
        assert len(rules) == 1 and rules[0]["ports"] == [{"port": "metrics", "protocol": "TCP"}], policy.name
        assert rules[0].get("from", []) == metrics_from, policy.name
        for rule in policy.doc["spec"]["ingress"]:
            assert rule is rules[0] or all(p["port"] != "metrics" for p in rule["ports"])
