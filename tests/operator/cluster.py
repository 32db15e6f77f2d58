"""An emulated cluster for the handler tests: kmock's KubernetesEmulator over HTTP, the IndexJob CRD's
API declared on it, and the parts of a real cluster the emulator does not play, played by the test:
the API server's schema validation, defaulting, uid and generation, and the Job controller."""
from __future__ import annotations

import asyncio
import base64
import contextlib
import copy
import uuid
from typing import Any, AsyncIterator, Awaitable, Callable

import aiohttp
import attrs
import kmock
import kopf

from mmsearch.operator.main import OperatorSettings, run
from mmsearch.dev.processes import free_port
from tests.operator.helpers import apply_defaults, crd_schema, job_complete, job_failed, job_running, schema_errors
from tests.support.loops import eventually_async

NAMESPACE = "search"
IJ = "/apis/mmsearch.io/v1alpha1/namespaces/{ns}/indexjobs"
JOBS = "/apis/batch/v1/namespaces/{ns}/jobs"
WAIT = 20.0  # upper bound of every wait (never a timing assertion)


@attrs.define(kw_only=True)
class Emulator(kmock.KubernetesEmulator):
    """kmock's emulator plus two things every API server does that it does not: names from
    ``metadata.generateName`` (kopf posts Events that way) and a ``resourceVersion`` on new objects
    (kopf's JSON patches test it). It never bumps the version, so such tests always pass."""

    async def _handle(self, request):  # type: ignore[no-untyped-def]
        if request.action == kmock.action.CREATE and isinstance(request.data, dict):
            meta = request.data.setdefault("metadata", {})
            if not meta.get("name") and meta.get("generateName"):
                meta["name"] = meta["generateName"] + uuid.uuid4().hex[:8]
            meta.setdefault("resourceVersion", "1")
        return await super()._handle(request)


def declare_resources(emulator: kmock.KubernetesEmulator) -> None:
    info = kmock.ResourceInfo
    verbs = {"get", "list", "watch", "create", "patch", "update", "delete"}
    emulator.resources["mmsearch.io/v1alpha1/indexjobs"] = info(kind="IndexJob", namespaced=True, verbs=verbs,
                                                                subresources={"status"})
    emulator.resources["batch/v1/jobs"] = info(kind="Job", namespaced=True, verbs=verbs, subresources={"status"})
    emulator.resources["v1/pods"] = info(kind="Pod", namespaced=True, verbs=verbs, subresources={"status"})
    emulator.resources["v1/events"] = info(kind="Event", namespaced=True, verbs=verbs)
    emulator.resources["v1/secrets"] = info(kind="Secret", namespaced=True, verbs=verbs)
    # kopf looks these two up at start (even with scanning disabled).
    emulator.resources["v1/namespaces"] = info(kind="Namespace", namespaced=False, verbs={"list", "watch"})
    emulator.resources["apiextensions.k8s.io/v1/customresourcedefinitions"] = info(
        kind="CustomResourceDefinition", namespaced=False, verbs={"list", "watch"})


class Cluster:
    """HTTP access to the emulator, acting as API server and Job controller where it does not."""

    def __init__(self, emulator: kmock.KubernetesEmulator, session: aiohttp.ClientSession):
        self.emulator, self.session = emulator, session
        self.url = ""
        self._server: contextlib.AsyncExitStack | None = None

    async def start_api_server(self) -> None:
        stack = contextlib.AsyncExitStack()
        server = await stack.enter_async_context(kmock.Server(self.emulator))
        self._server, self.url = stack, str(server.url).rstrip("/")

    async def stop_api_server(self) -> None:
        if self._server is not None:
            await self._server.aclose()
            self._server = None

    async def restart_api_server(self) -> None:
        """A new HTTP server over the same objects. kmock's server wedges once a watching client has
        gone (the next request never returns), so stopping the operator restarts the HTTP server
        with it; the objects stay, as etcd's would."""
        await self.stop_api_server()
        await self.start_api_server()

    async def call(self, method: str, path: str, body: Any = None, *, merge: bool = False) -> Any:
        headers = {"Content-Type": "application/merge-patch+json" if merge else "application/json"}
        async with self.session.request(method, self.url + path, json=body, headers=headers) as resp:
            data = await resp.json(content_type=None)
            assert resp.status < 400, (method, path, resp.status, data)
            return data

    # --- the API server's part --------------------------------------------------------------
    async def apply(self, obj: dict[str, Any]) -> dict[str, Any]:
        """Create an IndexJob as a real API server would: schema-validated, defaulted, uid, generation 1."""
        errors = schema_errors(obj)
        assert errors == [], f"a real API server would refuse this object: {errors}"
        stored = apply_defaults(crd_schema(), copy.deepcopy(obj))
        stored["metadata"] = {**stored["metadata"], "namespace": NAMESPACE, "uid": str(uuid.uuid4()),
                              "generation": 1, "creationTimestamp": "2026-01-01T00:00:00Z"}
        return await self.call("POST", IJ.format(ns=NAMESPACE), stored)

    async def edit_spec(self, name: str, **spec: Any) -> None:
        """A spec change: merge-patched, re-validated, generation bumped (as the API server does)."""
        current = await self.indexjob(name)
        new = copy.deepcopy(current)
        new["spec"].update(spec)
        assert schema_errors({k: new[k] for k in ("apiVersion", "kind", "metadata", "spec")}) == []
        patch = {"spec": spec, "metadata": {"generation": current["metadata"]["generation"] + 1}}
        await self.call("PATCH", f"{IJ.format(ns=NAMESPACE)}/{name}", patch, merge=True)

    async def create_secret(self, name: str, data: dict[str, str]) -> None:
        encoded = {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}
        await self.call("POST", f"/api/v1/namespaces/{NAMESPACE}/secrets",
                        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": encoded})

    async def secret_value(self, name: str, key: str) -> str:
        secret = await self.call("GET", f"/api/v1/namespaces/{NAMESPACE}/secrets/{name}")
        return base64.b64decode(secret["data"][key]).decode()

    async def indexjob(self, name: str) -> dict[str, Any]:
        return await self.call("GET", f"{IJ.format(ns=NAMESPACE)}/{name}")

    async def jobs(self) -> list[dict[str, Any]]:
        return (await self.call("GET", JOBS.format(ns=NAMESPACE)))["items"]

    async def events(self) -> list[dict[str, Any]]:
        return (await self.call("GET", f"/api/v1/namespaces/{NAMESPACE}/events"))["items"]

    # --- the Job controller's part ----------------------------------------------------------
    async def create_pod(self, pod: dict[str, Any]) -> None:
        """A pod the Job controller ran (and the kubelet finished), e.g. with a termination message."""
        await self.call("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", pod)

    async def set_job_status(self, job: dict[str, Any], fn: Callable[..., dict[str, Any]], **kw: Any) -> None:
        status = fn(job, **kw)["status"]
        await self.call("PATCH", f"{JOBS.format(ns=NAMESPACE)}/{job['metadata']['name']}/status",
                        {"status": status}, merge=True)

    async def complete_job(self, job: dict[str, Any],
                           run_pod: Callable[[int], Awaitable[tuple[int, str]]]) -> None:
        """Run every pod of ``job`` in turn (``run_pod(completion index)`` -> (exit code, output)) and
        report the outcome as the Job controller would: progress per index, Complete, or Failed with the
        failing pod's last output line."""
        completions = int(job["spec"].get("completions") or 1)
        done: list[str] = []
        for index in range(completions):
            code, output = await run_pod(index)
            if code != 0:
                last = output.strip().splitlines()[-1] if output.strip() else f"exit code {code}"
                await self.set_job_status(job, job_failed, reason="BackoffLimitExceeded", message=last)
                return
            done.append(str(index))
            if index + 1 < completions:
                await self.set_job_status(job, job_running, completed_indexes=",".join(done))
        await self.set_job_status(job, job_complete)

    # --- waiting ------------------------------------------------------------------------------
    async def wait_for(self, what: str, probe: Callable[[], Any]) -> Any:
        """Poll ``probe`` (async) until it returns something truthy; fail after WAIT seconds."""
        return await eventually_async(probe, what, timeout=WAIT, interval=0.1)

    async def wait_job(self, stage: str, *, exclude: set[str] = frozenset()) -> dict[str, Any]:
        async def probe():
            return next((j for j in await self.jobs() if j["metadata"]["labels"]["mmsearch.io/stage"] == stage
                         and j["metadata"]["name"] not in exclude), None)
        return await self.wait_for(f"the {stage} Job", probe)

    async def wait_status(self, name: str, check: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        async def probe():
            status = (await self.indexjob(name)).get("status") or {}
            return status if check(status) else None
        return await self.wait_for(f"status of {name}", probe)


@contextlib.asynccontextmanager
async def emulated_cluster() -> AsyncIterator[Cluster]:
    async with Emulator() as emulator, aiohttp.ClientSession() as session:
        declare_resources(emulator)
        cluster = Cluster(emulator, session)
        await cluster.start_api_server()
        try:
            yield cluster
        finally:
            await cluster.stop_api_server()


@contextlib.asynccontextmanager
async def running_operator(cluster: Cluster, *, liveness_port: int | None = None,
                           clock: Callable[[], Any] | None = None) -> AsyncIterator[None]:
    """The real operator (kopf, our handlers) against the emulator, stopped on exit (and the HTTP
    server restarted after it: see :meth:`Cluster.restart_api_server`). ``clock``: the operator's
    time (a test moves it to fire a schedule)."""
    settings = OperatorSettings(liveness_host="127.0.0.1", liveness_port=liveness_port or free_port(),
                                resync_seconds=2.0, log_json=False)
    stop = asyncio.Event()
    connection = kopf.ConnectionInfo(server=cluster.url, scheme="http", insecure=True)
    extra = {"clock": clock} if clock else {}
    task = asyncio.create_task(run(NAMESPACE, settings, connection=connection, stop_flag=stop, **extra))
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, WAIT)
        await cluster.restart_api_server()
