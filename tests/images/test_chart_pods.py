"""The built images run the way the chart (default values) and the operator's Jobs run them.

For every container of a Deployment the chart renders with default values, the
test runs the built image with that container's command, args, user, groups,
environment and mounts (tests/support/pods.py plays the kubelet), a read-only
root file system where the chart sets one with only the chart's mounts
writable, and waits until each of its probes passes as the kubelet would ask.

The cluster around them is made of real local servers: the IndexJob operator
against kmock's Kubernetes API emulator (tests/operator/cluster.py), a moto S3
server holding the model repository at the chart's ``s3://mmsearch-models/repository``,
secantusd for MongoDB, a real tritonserver serving the exported MiniLM, and
Milvus Lite as a gRPC server on the index the job image built. What replaces a
cluster address is listed per pod (``Replacements``: each must still be named by
the chart); what the cluster would add besides the chart's own environment is:

- the S3 endpoint and keys (``MMSEARCH_S3_ENDPOINT_URL``, ``AWS_*``) that a
  cloud identity or the chart's ``modelRepository.s3`` values would give;
- ``KUBECONFIG`` for the operator, pointing at the emulator (kopf's in-cluster
  login hard-codes https://kubernetes.default.svc);
- the Secrets the pods read: the signing keys the chart draws at install (drawn
  here the same way), and for the secure release the key file, web's relay key
  and each component's certificate from a test CA (tests/support/certs.py).

The default release admits no caller (no keys, anonymous access off): its web
answers 401. The secure release (API keys, mutual TLS between web, serving and
preprocess, the embedded encoder: the session's Triton speaks plaintext) runs a
search through web with a key, and refuses plaintext and certificate-less
callers at serving's port.

The index is made the way a user makes it: an IndexJob applied to the emulator;
the operator image creates one Job per stage and the test, as kubelet and Job
controller, runs each Job's container from the CPU job image exactly as the
manifest names it (command, args, env with Secrets resolved, user, read-only
root, the ``/tmp`` emptyDir and the data volume) and reports its outcome back.
Export is skipped: the session's ``minilm_repo`` ran that code on this machine,
and the export image (torch with CUDA) is built only with MMSEARCH_BUILD_GPU_IMAGES=1.
"""
from __future__ import annotations

import asyncio
import json
import secrets as random_secrets
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.core import artifacts
from mmsearch.core.access.keys import mint
from mmsearch.dev.processes import free_port
from tests.chart import charttools
from tests.operator.cluster import NAMESPACE, emulated_cluster
from tests.support.containers import (
    ContainerError,
    Mount,
    Running,
    run_to_end,
    start,
    wait_until,
)
from tests.support.certs import Ca
from tests.support.loops import eventually
from tests.support.pods import PodContainer, Replacements, SecretLookup, container_spec, probe_passes

pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(2400)]

BUCKET = "mmsearch-models"
SCENE = "t2t"  # the scene, collection alias and MongoDB collection of the chart's default experiments
READY_TIMEOUT = 180.0
STAGE_TIMEOUT = 600.0
S3_KEYS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}


@pytest.fixture(scope="session")
def chart() -> list[charttools.Manifest]:
    assert charttools.NAMESPACE == NAMESPACE, "the chart is rendered into the emulator's namespace"
    return charttools.manifests("default")


@pytest.fixture(scope="session")
def configmaps(chart) -> dict[str, dict[str, str]]:
    return {m.name: m.doc.get("data") or {} for m in charttools.of_kind(chart, "ConfigMap")}


@pytest.fixture(scope="session")
def drawn_keys() -> SecretLookup:
    """The chart's signing-keys Secret as Helm draws it at install (a random value per key, kept)."""
    drawn: dict[tuple[str, str], str] = {}

    def lookup(name: str, key: str) -> str:
        assert name == "rel-mmsearch-signing-keys", f"the default release names Secret {name}"
        return drawn.setdefault((name, key), random_secrets.token_urlsafe(48))
    return lookup


@pytest.fixture(scope="session")
def model_bucket(s3_server, minilm_repo) -> dict[str, str]:
    """The chart's model repository bucket on the moto server, with the exported MiniLM in it."""
    import boto3

    boto3.client("s3", endpoint_url=s3_server.endpoint).create_bucket(Bucket=BUCKET)
    artifacts.publish_tree(Path(minilm_repo) / "minilm", f"s3://{BUCKET}/repository/minilm")
    return {"MMSEARCH_S3_ENDPOINT_URL": s3_server.endpoint, **S3_KEYS}


def _wait_probes(running: Running, pod: PodContainer) -> None:
    probes = pod.probes()
    assert probes, f"container {pod.spec.name} declares no probe"
    for kind, probe in probes.items():
        wait_until(running, f"{pod.spec.name}: {kind} {json.dumps(probe, sort_keys=True)}",
                   lambda probe=probe: probe_passes(pod, probe), READY_TIMEOUT)


@dataclass
class Started:
    pod: PodContainer
    running: Running

    def address(self, port_name: str) -> str:
        return f"127.0.0.1:{self.pod.host_port(port_name)}"


def _start_deployment(chart, component: str, *, engine: str, image_for, workdir: Path, replace: dict[str, str],
                      configmaps=None, extra_env=None, secrets: SecretLookup | None = None) -> Started:
    manifest = charttools.deployment(chart, component)
    pod = charttools.pod_spec(manifest)
    (container,) = pod["containers"]
    replacements = Replacements(replace)
    spec = container_spec(pod, container, image=image_for(container["image"]), workdir=workdir, namespace=NAMESPACE,
                          replace=replacements, configmaps=configmaps, extra_env=extra_env, secrets=secrets)
    replacements.assert_all_used(f"the {component} Deployment")
    running = start(engine, spec.spec, workdir / "logs")
    try:
        _wait_probes(running, spec)
    except BaseException:
        running.stop()
        raise
    return Started(spec, running)


# --- the index: operator image + job image -------------------------------------------------------

def _kubeconfig(folder: Path, server: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config").write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "emulator",
        "clusters": [{"name": "emulator", "cluster": {"server": server}}],
        "users": [{"name": "operator", "user": {"token": "emulator-token"}}],
        "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "operator",
                                                      "namespace": NAMESPACE}}],
    }))
    return folder


def _indexjob(image: str, endpoint: str) -> dict[str, Any]:
    return {
        "apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "metadata": {"name": "images-t2t"},
        "spec": {
            "scene": SCENE, "modality": "text", "image": image,
            "workdir": f"s3://{BUCKET}/work", "volume": {"claimName": "index-data", "mountPath": "/data"},
            "source": {"kind": "stdlib", "uri": "json,csv"},
            "model": {"source": "sentence-transformers/all-MiniLM-L6-v2", "name": "minilm",
                      "repository": f"s3://{BUCKET}/repository"},
            "encode": {"batchSize": 32},
            "milvus": {"uri": "/data/milvus.db"},
            "mongo": {"uriSecret": {"name": "mongo"}, "database": "mmsearch", "collection": SCENE},
            "s3": {"endpointUrl": endpoint, "credentialsSecret": "s3"},
            "skipStages": ["export"],
        },
    }


async def _secrets_of(cluster, container: dict[str, Any]) -> dict[tuple[str, str], str]:
    refs = [v["valueFrom"]["secretKeyRef"] for v in container.get("env") or [] if "secretKeyRef" in v.get("valueFrom", {})]
    return {(r["name"], r["key"]): await cluster.secret_value(r["name"], r["key"]) for r in refs}


TERMINATION_DIR = "/var/run/mmsearch-termination"


async def _run_job(cluster, job: dict[str, Any], *, engine: str, image_for, workdir: Path, data: Path,
                   logs: dict[str, str]) -> None:
    """The kubelet and the Job controller: every pod of ``job`` from its manifest, then its status."""
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    stage = job["metadata"]["labels"]["mmsearch.io/stage"]
    secrets = await _secrets_of(cluster, container)
    indexed = job["spec"].get("completionMode") == "Indexed"

    async def run_pod(index: int) -> tuple[int, str]:
        # The kubelet gives a container a writable file at its terminationMessagePath (/dev/termination-log),
        # where a stage writes its --summary-file; the engine here cannot mount a file into /dev, so the
        # stage writes into a mounted folder instead.
        termination = workdir / f"{stage}-{index}" / "termination"
        termination.mkdir(parents=True, exist_ok=True)
        termination.chmod(0o777)
        spec = container_spec(pod, container, image=image_for(container["image"]), workdir=workdir / f"{stage}-{index}",
                              namespace=NAMESPACE,
                              replace=Replacements({"/dev/termination-log": f"{TERMINATION_DIR}/termination-log"}),
                              secrets=lambda n, k: secrets[(n, k)],
                              claims={v["persistentVolumeClaim"]["claimName"]: data for v in pod["volumes"]
                                      if "persistentVolumeClaim" in v},
                              extra_env={"JOB_COMPLETION_INDEX": str(index)} if indexed else None)
        spec.spec.mounts.append(Mount(termination, TERMINATION_DIR, read_only=False))
        code, output = await asyncio.to_thread(run_to_end, engine, spec.spec, workdir / "logs", STAGE_TIMEOUT)
        logs[f"{stage}[{index}]"] = output
        return code, output

    await cluster.complete_job(job, run_pod)


@dataclass(frozen=True)
class IndexRun:
    status: dict[str, Any]
    stages: list[str]
    jobs: list[dict[str, Any]]
    milvus_file: Path
    logs: dict[str, str]
    operator_log: str


@pytest.fixture(scope="session")
async def index_run(chart, engine, images, image_for, model_bucket, mongo_server, tmp_path_factory) -> IndexRun:
    """The chart's operator Deployment (operator image) runs an IndexJob through the CPU job image."""
    work = tmp_path_factory.mktemp("indexjob")
    data = work / "index-data"
    data.mkdir()
    data.chmod(0o777)
    logs: dict[str, str] = {}
    async with emulated_cluster() as cluster:
        manifest = charttools.deployment(chart, "operator")
        pod = charttools.pod_spec(manifest)
        (container,) = pod["containers"]
        kube = _kubeconfig(work / "kube", cluster.url)
        spec = container_spec(pod, container, image=image_for(container["image"]), workdir=work / "operator",
                              namespace=NAMESPACE, replace=Replacements({}),
                              extra_env={"KUBECONFIG": "/var/run/mmsearch-test/config"})
        spec.spec.mounts.append(Mount(kube, "/var/run/mmsearch-test", read_only=True))
        operator = start(engine, spec.spec, work / "logs")
        try:
            await asyncio.to_thread(_wait_probes, operator, spec)
            await cluster.create_secret("mongo", {"uri": mongo_server})
            await cluster.create_secret("s3", S3_KEYS)
            await cluster.apply(_indexjob(images["jobs-cpu"], model_bucket["MMSEARCH_S3_ENDPOINT_URL"]))
            seen: list[dict[str, Any]] = []
            while True:
                async def probe():
                    status = (await cluster.indexjob("images-t2t")).get("status") or {}
                    if status.get("phase") in ("Succeeded", "Failed"):
                        return ("done", status)
                    names = {j["metadata"]["name"] for j in seen}
                    new = [j for j in await cluster.jobs() if j["metadata"]["name"] not in names]
                    return ("job", new[0]) if new else None
                try:
                    kind, value = await cluster.wait_for("the operator's next Job or the end of the run", probe)
                except AssertionError as exc:
                    raise ContainerError(f"{exc}; {operator.describe()}") from None
                if kind == "done":
                    status = value
                    break
                seen.append(value)
                await _run_job(cluster, value, engine=engine, image_for=image_for, workdir=work, data=data, logs=logs)
        finally:
            await asyncio.to_thread(operator.stop)
    return IndexRun(status, [j["metadata"]["labels"]["mmsearch.io/stage"] for j in seen], seen,
                    data / "milvus.db", logs, operator.output(60))


def test_the_operator_image_runs_an_indexjob_through_the_job_image(index_run, mongo_server):
    assert index_run.status.get("phase") == "Succeeded", (
        f"IndexJob status {json.dumps(index_run.status, indent=1)}\nlogs of the stages that ran:\n"
        + "\n".join(f"--- {s}\n{log[-2000:]}" for s, log in index_run.logs.items())
        + f"\n--- operator\n{index_run.operator_log}")
    assert index_run.stages == ["prepare", "encode", "push-milvus", "push-mongo", "publish"]
    for job in index_run.jobs:
        container = job["spec"]["template"]["spec"]["containers"][0]
        assert container["command"][:2] == ["mmsearch", "job"] and container["securityContext"]["readOnlyRootFilesystem"]
    import pymongo

    with pymongo.MongoClient(mongo_server, serverSelectionTimeoutMS=10000) as mongo:
        documents = mongo["mmsearch"][SCENE].count_documents({})
    assert documents > 0 and index_run.milvus_file.is_file()


# --- the online services, on that index -----------------------------------------------------------

@pytest.fixture(scope="session")
def milvus_server(index_run) -> str:
    """Milvus Lite as a gRPC server (``http://127.0.0.1:PORT``) on the Lite file the job image wrote."""
    from milvus_lite.server import Server

    port = free_port()
    server = Server(str(index_run.milvus_file), address=f"127.0.0.1:{port}")
    assert server.init() and server.start(), f"Milvus Lite did not start on {index_run.milvus_file}"
    eventually(lambda: socket.create_connection(("127.0.0.1", port), timeout=1).close() or True,
               "Milvus Lite's gRPC port open", timeout=60, interval=0.2, retry=(OSError,))
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def preprocess(chart, engine, image_for, model_bucket, tmp_path_factory) -> Started:
    started = _start_deployment(chart, "preprocess", engine=engine, image_for=image_for,
                                workdir=tmp_path_factory.mktemp("pod-preprocess"), replace={}, extra_env=model_bucket)
    yield started
    started.running.stop()


@pytest.fixture(scope="session")
def serving(chart, configmaps, engine, image_for, model_bucket, preprocess, triton_minilm, milvus_server,
            mongo_server, drawn_keys, tmp_path_factory) -> Started:
    replace = {"rel-mmsearch-preprocess-headless:50051": preprocess.address("grpc"),
               "rel-mmsearch-triton:8001": triton_minilm.address,
               "http://milvus:19530": milvus_server, "mongodb://mongodb:27017": mongo_server}
    started = _start_deployment(chart, "serving", engine=engine, image_for=image_for, configmaps=configmaps,
                                workdir=tmp_path_factory.mktemp("pod-serving"), replace=replace, extra_env=model_bucket,
                                secrets=drawn_keys)
    yield started
    started.running.stop()


@pytest.fixture(scope="session")
def web(chart, engine, image_for, serving, tmp_path_factory) -> Started:
    started = _start_deployment(chart, "web", engine=engine, image_for=image_for,
                                workdir=tmp_path_factory.mktemp("pod-web"),
                                replace={"rel-mmsearch-serving-headless:50052": serving.address("grpc")})
    yield started
    started.running.stop()


def _mount_targets(started: Started) -> dict[str, bool]:
    return {m.target: m.read_only for m in started.pod.spec.mounts}


def test_preprocess_becomes_ready_read_only_with_only_the_charts_mounts(preprocess):
    assert preprocess.pod.spec.read_only and preprocess.pod.spec.user == 10001
    assert _mount_targets(preprocess) == {"/tmp": False, "/var/cache/mmsearch": False}
    assert preprocess.running.exited() is None, preprocess.running.describe()


def test_serving_becomes_ready_on_the_job_built_index(serving):
    assert serving.pod.spec.read_only
    assert _mount_targets(serving) == {"/tmp": False, "/var/cache/mmsearch": False, "/etc/mmsearch/experiments": True}
    assert serving.running.exited() is None, serving.running.describe()


QUERY = urllib.parse.urlencode({"scene": SCENE, "q": "read rows from a csv file", "k": 3})


def _search(base: str, key: str | None = None, context: ssl.SSLContext | None = None) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of GET /api/search through web, with ``key`` as a bearer token."""
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    request = urllib.request.Request(f"{base}/api/search?{QUERY}", headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, json.load(response), dict(response.headers)
    except urllib.error.HTTPError as exc:
        return exc.code, json.load(exc), dict(exc.headers)


def _assert_found(body: dict) -> None:
    assert len(body["items"]) == 3, body
    assert all(item["summary"].get("question") for item in body["items"]), body
    assert any(item["summary"].get("category") == "csv" for item in body["items"]), body


def test_web_of_the_default_release_is_ready_and_admits_no_caller_without_a_key(web):
    """The default release: no API keys, anonymous access off; web is ready (serving answers its health)."""
    assert web.pod.spec.read_only and _mount_targets(web) == {"/tmp": False}
    status, body, headers = _search(f"http://{web.address('http')}")
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), (status, body)
    assert "API key is required" in json.dumps(body), body


def _run_hook(chart, engine, image_for, serving: Started, workdir: Path, secrets: SecretLookup | None = None) -> None:
    (hook,) = [m for m in charttools.of_kind(chart, "Pod") if charttools.component(m) == "test"]
    pod = charttools.pod_spec(hook)
    (container,) = pod["containers"]
    replacements = Replacements({"rel-mmsearch-serving:50052": serving.address("grpc")})
    spec = container_spec(pod, container, image=image_for(container["image"]), workdir=workdir,
                          namespace=NAMESPACE, replace=replacements, secrets=secrets)
    replacements.assert_all_used("the helm test Pod")
    code, output = run_to_end(engine, spec.spec, workdir / "logs", timeout=120)
    assert code == 0 and "SERVING" in output, f"helm test pod exited with {code}:\n{output}"


def test_the_helm_test_hook_passes_against_serving(chart, engine, image_for, serving, tmp_path):
    _run_hook(chart, engine, image_for, serving, tmp_path)


def test_the_services_image_refuses_a_milvus_lite_file_with_a_clear_message(engine, images, tmp_path):
    from tests.support.containers import ContainerSpec

    script = "from mmsearch.core.milvus.connection import connect\nconnect('/tmp/milvus.db')"
    spec = ContainerSpec(name="lite-check", image=images["services"], command=["python", "-c", script])
    code, output = run_to_end(engine, spec, tmp_path, timeout=120)
    assert code != 0 and "Milvus Lite is not installed here" in output and "http://milvus:19530" in output, output


# --- the secure release: API keys and mutual TLS, as the chart configures them ------------------------------

SECURE_VALUES = {
    "access": {"existingSecret": "mmsearch-keys"},
    "tls": {"enabled": True, "mutual": True,
            **{c: {"existingSecret": f"{c}-cert"} for c in ("web", "serving", "preprocess")}},
    "triton": {"enabled": False},  # the session's Triton speaks plaintext: serving embeds the same model
}


@dataclass(frozen=True)
class SecureRelease:
    chart: list[charttools.Manifest]
    ca: Ca
    caller_key: str  # scope search on the scene t2t
    secrets: SecretLookup


@pytest.fixture(scope="session")
def secure() -> SecureRelease:
    rendered = charttools.render_raw(SECURE_VALUES)
    chart = [charttools.Manifest(t, d) for t, text in sorted(rendered.items()) if not t.endswith("NOTES.txt")
             for d in yaml.safe_load_all(text) if d]
    ca = Ca.make("chart pods test CA")
    relay_key, relay_line = mint(["relay"], name="web")
    caller_key, caller_line = mint(["search"], scenes=[SCENE], name="test caller")
    data = {("mmsearch-keys", "keys.jsonl"): f"{relay_line}\n{caller_line}\n",
            ("mmsearch-keys", "relay-key"): relay_key}
    for component in ("web", "serving", "preprocess"):
        leaf = ca.leaf(component)
        data.update({(f"{component}-cert", "tls.crt"): leaf.cert.decode(), (f"{component}-cert", "tls.key"): leaf.key.decode(),
                     (f"{component}-cert", "ca.crt"): leaf.ca.decode()})
    drawn: dict[tuple[str, str], str] = {}

    def lookup(name: str, key: str) -> str:
        if name == "rel-mmsearch-signing-keys":
            return drawn.setdefault((name, key), random_secrets.token_urlsafe(48))
        assert (name, key) in data, f"the secure release reads Secret {name} key {key}, which the test did not make"
        return data[(name, key)]
    return SecureRelease(chart, ca, caller_key, lookup)


@pytest.fixture(scope="session")
def secure_preprocess(secure, engine, image_for, model_bucket, tmp_path_factory) -> Started:
    started = _start_deployment(secure.chart, "preprocess", engine=engine, image_for=image_for, replace={},
                                workdir=tmp_path_factory.mktemp("pod-secure-preprocess"), extra_env=model_bucket,
                                secrets=secure.secrets)
    yield started
    started.running.stop()


@pytest.fixture(scope="session")
def secure_serving(secure, engine, image_for, model_bucket, secure_preprocess, milvus_server, mongo_server,
                   tmp_path_factory) -> Started:
    configmaps = {m.name: m.doc.get("data") or {} for m in charttools.of_kind(secure.chart, "ConfigMap")}
    replace = {"rel-mmsearch-preprocess-headless:50051": secure_preprocess.address("grpc"),
               "http://milvus:19530": milvus_server, "mongodb://mongodb:27017": mongo_server}
    started = _start_deployment(secure.chart, "serving", engine=engine, image_for=image_for, configmaps=configmaps,
                                workdir=tmp_path_factory.mktemp("pod-secure-serving"), replace=replace,
                                extra_env=model_bucket, secrets=secure.secrets)
    yield started
    started.running.stop()


@pytest.fixture(scope="session")
def secure_web(secure, engine, image_for, secure_serving, tmp_path_factory) -> Started:
    started = _start_deployment(secure.chart, "web", engine=engine, image_for=image_for,
                                workdir=tmp_path_factory.mktemp("pod-secure-web"), secrets=secure.secrets,
                                replace={"rel-mmsearch-serving-headless:50052": secure_serving.address("grpc")})
    yield started
    started.running.stop()


def test_the_secure_release_answers_a_search_with_a_key_and_refuses_one_without(secure, secure_web):
    assert _mount_targets(secure_web) == {"/tmp": False, "/etc/mmsearch/tls": True, "/etc/mmsearch/access": True,
                                          "/etc/mmsearch/relay": True}
    base = f"http://{secure_web.address('http')}"
    status, body, _ = _search(base, secure.caller_key)
    assert status == 200, body
    _assert_found(body)
    status, body, headers = _search(base)
    assert status == 401 and headers.get("WWW-Authenticate", "").startswith("Bearer"), (status, body)
    assert secure.caller_key not in json.dumps(body)


def test_serving_of_the_secure_release_refuses_plaintext_and_callers_without_a_certificate(secure, secure_serving):
    """Probed on its metrics port (the kubelet's gRPC probe cannot speak TLS), serving's port speaks TLS only."""
    probes = secure_serving.pod.probes()
    assert {k: p["httpGet"]["port"] for k, p in probes.items()} == dict.fromkeys(probes, "metrics")
    address = secure_serving.address("grpc")
    request = health_pb2.HealthCheckRequest(service="mmsearch.v1.RetrievalService")

    def check(credentials: grpc.ChannelCredentials | None) -> int:
        channel = grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)
        with channel:
            return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status

    for credentials in (None, grpc.ssl_channel_credentials(secure.ca.pem)):  # plaintext; TLS without a certificate
        with pytest.raises(grpc.RpcError) as refused:
            check(credentials)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    leaf = secure.ca.leaf("a client")
    assert check(grpc.ssl_channel_credentials(secure.ca.pem, leaf.key, leaf.cert)) == health_pb2.HealthCheckResponse.SERVING


def test_the_helm_test_hook_passes_against_the_secure_serving(secure, engine, image_for, secure_serving, tmp_path):
    """Over TLS, showing web's certificate (mutual TLS), as the chart mounts it in the hook."""
    _run_hook(secure.chart, engine, image_for, secure_serving, tmp_path, secrets=secure.secrets)
