"""A pod manifest's container as a :class:`~tests.support.containers.ContainerSpec`, and its probes.

What the kubelet would do, on one machine:

- **environment**: ``value`` (``$(VAR)`` expanded as Kubernetes does),
  ``fieldRef: metadata.namespace``, ``secretKeyRef`` (through the caller's
  lookup). Cluster addresses in values are replaced by the local servers the
  test started, in values and in command/args (:class:`Replacements`: every replacement must be used, so a
  chart that stops naming an address fails the test instead of silently
  pointing at nothing);
- **ports**: pods share the host's network here, so every ``containerPort``
  gets a free host port and an environment value equal to a container port
  becomes that host port (``MMSEARCH_PORT: "50051"``);
- **user**: ``runAsUser``/``runAsGroup``/``fsGroup`` of the container or the pod;
  **read-only root** from ``readOnlyRootFilesystem``;
- **volumes**: ``emptyDir`` is a fresh folder, ``configMap`` the rendered
  ConfigMap's data written to a folder (read-only, as always), ``secret`` the
  Secret's ``items`` (through the caller's lookup) written to a folder with the
  volume's ``defaultMode``, group-owned by the pod's ``fsGroup`` as the kubelet
  does, a ``persistentVolumeClaim`` the folder the caller gives for its claim;
- **probes** (:func:`probe_passes`): ``grpc`` asks the standard health service,
  ``httpGet`` (``scheme: HTTPS`` too, checking no certificate, as the kubelet)
  wants a 2xx/3xx answer.
"""
from __future__ import annotations

import os
import re
import ssl
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mmsearch.dev.processes import free_port
from tests.support.containers import ContainerSpec, Mount

SecretLookup = Callable[[str, str], str]


@dataclass
class Replacements:
    """Cluster address -> local address, substituted in environment values; each must be used."""
    table: dict[str, str]
    used: set[str] = field(default_factory=set)

    def apply(self, text: str) -> str:
        for old, new in self.table.items():
            if old in text:
                text = text.replace(old, new)
                self.used.add(old)
        return text

    def assert_all_used(self, what: str) -> None:
        unused = sorted(set(self.table) - self.used)
        assert not unused, (f"{what}: the chart no longer sets {unused} (the addresses this test replaces "
                            "with local servers): update the test")


@dataclass
class PodContainer:
    spec: ContainerSpec
    container: dict[str, Any]
    ports: dict[int, int]           # containerPort -> host port

    def host_port(self, port: int | str) -> int:
        """The host port of a probe's ``port`` (a number or a port name of the container)."""
        if isinstance(port, str) and not port.isdigit():
            named = {p["name"]: p["containerPort"] for p in self.container.get("ports", []) if p.get("name")}
            assert port in named, f"container {self.container['name']} has no port named {port!r}"
            port = named[port]
        return self.ports[int(port)]

    def probes(self) -> dict[str, dict[str, Any]]:
        return {kind: self.container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
                if kind in self.container}


def _security(pod: dict[str, Any], container: dict[str, Any], key: str) -> Any:
    value = (container.get("securityContext") or {}).get(key)
    return value if value is not None else (pod.get("securityContext") or {}).get(key)


def _env(container: dict[str, Any], *, namespace: str, secrets: SecretLookup | None,
         replace: Replacements, ports: dict[int, int]) -> dict[str, str]:
    env: dict[str, str] = {}
    for var in container.get("env") or []:
        name = var["name"]
        if "value" in var:
            value = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), str(var["value"]))
            value = replace.apply(value)
            if value.isdigit() and int(value) in ports:
                value = str(ports[int(value)])
        else:
            source = var["valueFrom"]
            if "fieldRef" in source:
                path = source["fieldRef"]["fieldPath"]
                assert path == "metadata.namespace", f"{name}: fieldRef {path} is not played by the tests"
                value = namespace
            elif "secretKeyRef" in source:
                assert secrets is not None, f"{name} comes from a Secret and the test gave none"
                ref = source["secretKeyRef"]
                value = secrets(ref["name"], ref["key"])
            else:
                raise AssertionError(f"{name}: {sorted(source)} is not played by the tests")
        env[name] = value
    return env


def container_spec(pod: dict[str, Any], container: dict[str, Any], *, image: str, workdir: Path,
                   namespace: str, replace: Replacements, secrets: SecretLookup | None = None,
                   configmaps: dict[str, dict[str, str]] | None = None, claims: dict[str, Path] | None = None,
                   extra_env: dict[str, str] | None = None) -> PodContainer:
    """``container`` of ``pod`` (a pod spec) run from ``image``; volumes are made under ``workdir``."""
    ports = {p["containerPort"]: free_port() for p in container.get("ports", [])}
    env = _env(container, namespace=namespace, secrets=secrets, replace=replace, ports=ports)
    env.update(extra_env or {})
    volumes = {v["name"]: v for v in pod.get("volumes") or []}
    mounts = []
    for mount in container.get("volumeMounts") or []:
        volume = volumes[mount["name"]]
        host = workdir / "volumes" / mount["name"]
        read_only = bool(mount.get("readOnly"))
        if "emptyDir" in volume:
            host.mkdir(parents=True, exist_ok=True)
            host.chmod(0o777)
        elif "configMap" in volume:
            name = volume["configMap"]["name"]
            assert configmaps and name in configmaps, f"volume {mount['name']}: ConfigMap {name} is not rendered"
            host.mkdir(parents=True, exist_ok=True)
            for key, text in configmaps[name].items():
                (host / key).write_text(text)
            read_only = True
        elif "secret" in volume:
            assert secrets is not None, f"volume {mount['name']} is a Secret and the test gave none"
            source = volume["secret"]
            assert source.get("items"), f"volume {mount['name']}: a Secret volume without items is not played"
            host.mkdir(parents=True, exist_ok=True)
            fs_group = (pod.get("securityContext") or {}).get("fsGroup")
            for item in source["items"]:
                path = host / item["path"]
                path.write_text(secrets(source["secretName"], item["key"]))
                if fs_group is not None:
                    os.chown(path, 0, fs_group)
                path.chmod(source.get("defaultMode", 0o644))
            read_only = True
        elif "persistentVolumeClaim" in volume:
            claim = volume["persistentVolumeClaim"]["claimName"]
            assert claims and claim in claims, f"volume {mount['name']}: no folder given for claim {claim}"
            host = claims[claim]
        else:
            raise AssertionError(f"volume {mount['name']}: {sorted(volume)} is not played by the tests")
        mounts.append(Mount(host, mount["mountPath"], read_only))
    groups = tuple(g for g in [(pod.get("securityContext") or {}).get("fsGroup"),
                               *((pod.get("securityContext") or {}).get("supplementalGroups") or [])] if g)
    spec = ContainerSpec(
        name=container["name"], image=image,
        command=[replace.apply(c) for c in container["command"]] if "command" in container else None,
        args=[replace.apply(a) for a in container["args"]] if "args" in container else None,
        env=env, user=_security(pod, container, "runAsUser"), group=_security(pod, container, "runAsGroup"),
        groups=groups, read_only=bool(_security(pod, container, "readOnlyRootFilesystem")), mounts=mounts,
        workdir=container.get("workingDir"))
    return PodContainer(spec, container, ports)


def probe_passes(pod: PodContainer, probe: dict[str, Any]) -> bool:
    """One probe attempt as the kubelet makes it (gRPC health or an HTTP GET), against 127.0.0.1."""
    if "grpc" in probe:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        target = f"127.0.0.1:{pod.host_port(probe['grpc']['port'])}"
        with grpc.insecure_channel(target) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=probe["grpc"].get("service", "")), timeout=2)
        return reply.status == health_pb2.HealthCheckResponse.SERVING
    if "httpGet" in probe:
        get = probe["httpGet"]
        scheme = get.get("scheme", "HTTP").lower()
        url = f"{scheme}://127.0.0.1:{pod.host_port(get['port'])}{get.get('path', '/')}"
        context = ssl._create_unverified_context() if scheme == "https" else None  # the kubelet checks none
        with urllib.request.urlopen(url, timeout=2, context=context) as response:
            return 200 <= response.status < 400
    raise AssertionError(f"probe {sorted(probe)} is not played by the tests")
