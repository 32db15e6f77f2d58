"""The few Kubernetes API calls the operator makes besides kopf's own, over aiohttp.

kopf ships no general client, and the official clients add a large
dependency for six calls. This one uses the ``kopf.ConnectionInfo`` that
kopf's login handler returns (server, token or client certificate, CA), so it
talks to exactly what kopf talks to: a cluster, or the kmock emulator in the
tests. It speaks plain JSON, merge-patches status through the ``/status``
subresource, and treats "already exists" on create and "not found" on delete
as success (both make the operator safe to restart at any point).
"""
from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp
import kopf

from mmsearch.operator.manifests import LABEL_INDEXJOB, LABEL_STAGE
from mmsearch.operator.spec import GROUP, PLURAL, VERSION


class KubeError(RuntimeError):
    """An API call failed; the message has the method, path, HTTP status and the server's message."""

    def __init__(self, method: str, path: str, status: int, message: str):
        super().__init__(f"{method} {path}: HTTP {status}: {message}")
        self.status = status


class KubeClient:
    """A small async Kubernetes API client bound to the credentials kopf logged in with."""

    def __init__(self, info: kopf.ConnectionInfo | None = None, *, timeout: float = 30.0):
        self._info = info
        self._session: aiohttp.ClientSession | None = None
        self._stale: aiohttp.ClientSession | None = None  # replaced on re-login; closed in close()
        self._timeout = aiohttp.ClientTimeout(total=timeout)

    def use(self, info: kopf.ConnectionInfo) -> None:
        """Switch to fresh credentials (called from the login handler, also on re-login)."""
        self._info = info
        self._stale, self._session = self._session, None

    async def close(self) -> None:
        for session in (self._session, self._stale):
            if session is not None and not session.closed:
                await session.close()

    def _open(self) -> aiohttp.ClientSession:
        if self._info is None:
            raise RuntimeError("KubeClient has no credentials yet (the login handler has not run)")
        if self._session is None or self._session.closed:
            ssl = self._info.as_ssl_context() if self._info.server.startswith("https") else False
            self._session = aiohttp.ClientSession(headers=self._info.as_http_headers(), timeout=self._timeout,
                                                  connector=aiohttp.TCPConnector(ssl=ssl))
        return self._session

    async def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = "application/json", ok: tuple[int, ...] = ()) -> tuple[int, Any]:
        """``(status, json)``; raises :class:`KubeError` for statuses >= 400 not listed in ``ok``."""
        session = self._open()
        url = self._info.server.rstrip("/") + path  # type: ignore[union-attr]  # _open() checked it
        async with session.request(method, url, json=body, params=params,
                                   headers={"Content-Type": content_type}) as resp:
            try:
                data = await resp.json(content_type=None)
            except ValueError:
                data = None
            if resp.status >= 400 and resp.status not in ok:
                message = data.get("message") if isinstance(data, dict) else await resp.text()
                raise KubeError(method, path, resp.status, str(message)[:500])
            return resp.status, data

    @staticmethod
    def indexjob_path(namespace: str, name: str = "") -> str:
        base = f"/apis/{GROUP}/{VERSION}/namespaces/{quote(namespace)}/{PLURAL}"
        return f"{base}/{quote(name)}" if name else base

    @staticmethod
    def jobs_path(namespace: str, name: str = "") -> str:
        base = f"/apis/batch/v1/namespaces/{quote(namespace)}/jobs"
        return f"{base}/{quote(name)}" if name else base

    async def get_indexjob(self, namespace: str, name: str) -> dict[str, Any] | None:
        status, data = await self.request("GET", self.indexjob_path(namespace, name), ok=(404,))
        return None if status == 404 else data

    async def list_jobs(self, namespace: str, indexjob: str) -> list[dict[str, Any]]:
        """The IndexJob's stage Jobs (selected by label; filtered here too, whatever the server did)."""
        _, data = await self.request("GET", self.jobs_path(namespace),
                                     params={"labelSelector": f"{LABEL_INDEXJOB}={indexjob}"})
        return [j for j in (data or {}).get("items") or []
                if ((j.get("metadata") or {}).get("labels") or {}).get(LABEL_INDEXJOB) == indexjob]

    @staticmethod
    def pods_path(namespace: str) -> str:
        return f"/api/v1/namespaces/{quote(namespace)}/pods"

    async def list_pods(self, namespace: str, indexjob: str, stage: str) -> list[dict[str, Any]]:
        """The pods of the IndexJob's ``stage`` Jobs (by the labels the Job's pod template carries)."""
        _, data = await self.request("GET", self.pods_path(namespace),
                                     params={"labelSelector": f"{LABEL_INDEXJOB}={indexjob},{LABEL_STAGE}={stage}"})
        return [p for p in (data or {}).get("items") or []
                if ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_INDEXJOB) == indexjob
                and ((p.get("metadata") or {}).get("labels") or {}).get(LABEL_STAGE) == stage]

    async def create_job(self, manifest: dict[str, Any]) -> bool:
        """Create a Job; False when one of that name exists already (a restart re-creating it)."""
        status, _ = await self.request("POST", self.jobs_path(manifest["metadata"]["namespace"]),
                                       body=manifest, ok=(409,))
        return status != 409

    async def delete_job(self, namespace: str, name: str) -> None:
        """Delete a Job and (in the background) its pods; gone already is fine."""
        await self.request("DELETE", self.jobs_path(namespace, name), ok=(404,),
                           body={"kind": "DeleteOptions", "apiVersion": "v1", "propagationPolicy": "Background"})

    async def patch_status(self, namespace: str, name: str, patch: dict[str, Any]) -> None:
        await self.request("PATCH", self.indexjob_path(namespace, name) + "/status", body={"status": patch},
                           content_type="application/merge-patch+json", ok=(404,))
