"""Thin kopf handlers: read the IndexJob and its Jobs, call :func:`reconciler.reconcile`, apply the decision.

Every trigger runs the same level-triggered :func:`reconcile_indexjob`:
- IndexJob created, resumed (operator start) or its spec/metadata updated
  (kopf's create/resume/update handlers, retried by kopf on errors);
- any change of a Job the operator manages (``kopf.on.event`` on ``batch/v1``
  Jobs labelled ``app.kubernetes.io/managed-by=mmsearch-operator``), which
  wakes the owning IndexJob (named in the ``mmsearch.io/indexjob`` label);
- a timer on unfinished IndexJobs, a safety net for a missed watch event.

While an evaluate or publish stage (or a rollback) runs, the pods of its Job
are read too: its outcome is in their termination message (see
:mod:`mmsearch.operator.reconciler`). The timer also wakes IndexJobs with a
``spec.schedule``, so a fire time is acted on within ``resync_seconds``; the
clock is a parameter of the registry (the tests move it themselves).

Calls for one IndexJob are serialised by a lock, and each reads the object
fresh from the API rather than trusting the triggering event's body. The
decision is applied in a restart-safe order: delete superseded Jobs, create
Jobs (409 = already there), then write status, then emit Events.
"""
from __future__ import annotations

import asyncio
import logging
from datetime import datetime, timezone
from typing import Any, Callable

import kopf

from mmsearch.operator import reconciler as machine
from mmsearch.operator.kube import KubeClient
from mmsearch.operator.manifests import LABEL_INDEXJOB, MANAGED_BY
from mmsearch.operator.spec import GROUP, PLURAL, VERSION

ANNOTATION_PREFIX = "mmsearch.io"  # kopf's own bookkeeping annotations: mmsearch.io/last-handled-configuration


Clock = Callable[[], datetime]


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


def build_memo(kube: KubeClient | None = None, clock: Clock = utc_now) -> kopf.Memo:
    """The operator-wide memo the handlers share: the API client, the per-IndexJob locks and the clock."""
    return kopf.Memo(kube=kube or KubeClient(), locks={}, clock=clock)


async def reconcile_indexjob(kube: KubeClient, locks: dict[tuple[str, str], asyncio.Lock], namespace: str,
                             name: str, logger: logging.Logger | Any, clock: Clock = utc_now) -> None:
    """Bring IndexJob ``namespace/name`` one step closer to done (idempotent)."""
    lock = locks.setdefault((namespace, name), asyncio.Lock())
    async with lock:
        obj = await kube.get_indexjob(namespace, name)
        if obj is None or (obj.get("metadata") or {}).get("deletionTimestamp"):
            return  # gone or going: owner references delete its Jobs
        jobs = await kube.list_jobs(namespace, name)
        stage = machine.pods_to_read(obj.get("status"))
        pods = await kube.list_pods(namespace, name, stage) if stage else []  # their outcome
        decision = machine.reconcile(obj, jobs, clock(), pods)
        for job_name in decision.delete:
            logger.info("deleting superseded Job %s", job_name)
            await kube.delete_job(namespace, job_name)
        for manifest in decision.create:
            created = await kube.create_job(manifest)
            logger.info("%s Job %s", "created" if created else "found existing", manifest["metadata"]["name"])
        patch = machine.status_patch(obj.get("status"), decision.status)
        if patch:
            await kube.patch_status(namespace, name, patch)
        for event in decision.events:
            kopf.event(obj, type=event.type, reason=event.reason, message=event.message)


def _unfinished(status: kopf.Status, meta: kopf.Meta, spec: kopf.Spec, **_: Any) -> bool:
    return (status.get("phase") not in (machine.SUCCEEDED, machine.FAILED)
            or status.get("observedGeneration") != meta.get("generation")
            or bool(spec.get("schedule")) or bool((spec.get("snapshots") or {}).get("cron"))
            or any((status.get(key) or {}).get("state") == machine.RUNNING for key in ("rollback", "snapshots")))


def build_registry(connection: kopf.ConnectionInfo | None = None, *, resync_seconds: float = 60.0,
                   disable_scanning: bool = True) -> kopf.OperatorRegistry:
    """A registry with the operator's handlers. ``connection``: log in with it (tests, an emulator);
    otherwise with the pod's service account, or a kubeconfig outside a cluster."""
    registry = kopf.OperatorRegistry()

    @kopf.on.startup(registry=registry)
    def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
        # kopf's bookkeeping lives in annotations: the status belongs to the IndexJob schema.
        settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=ANNOTATION_PREFIX)
        settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
            prefix=ANNOTATION_PREFIX, key="last-handled-configuration")
        settings.posting.level = logging.WARNING  # handler logs become Events only when they warn
        # The CRD is installed with the chart before the operator starts; no namespace or CRD
        # discovery is needed (and so no RBAC for it).
        settings.scanning.disabled = disable_scanning

    @kopf.on.login(registry=registry)
    def login(memo: kopf.Memo, **kwargs: Any) -> kopf.ConnectionInfo | None:
        info = connection or kopf.login_with_service_account(**kwargs) or kopf.login_with_kubeconfig(**kwargs)
        if info is not None:
            memo.kube.use(info)
        return info

    @kopf.on.resume(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.create(GROUP, VERSION, PLURAL, registry=registry)
    @kopf.on.update(GROUP, VERSION, PLURAL, registry=registry)
    async def indexjob_changed(namespace: str, name: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await reconcile_indexjob(memo.kube, memo.locks, namespace, name, logger, memo.clock)

    @kopf.timer(GROUP, VERSION, PLURAL, interval=resync_seconds, initial_delay=resync_seconds,
                when=_unfinished, registry=registry)
    async def resync(namespace: str, name: str, memo: kopf.Memo, logger: Any, **_: Any) -> None:
        await reconcile_indexjob(memo.kube, memo.locks, namespace, name, logger, memo.clock)

    @kopf.on.event("batch", "v1", "jobs", labels={"app.kubernetes.io/managed-by": MANAGED_BY,
                                                  LABEL_INDEXJOB: kopf.PRESENT}, registry=registry)
    async def job_changed(namespace: str, labels: kopf.Labels, memo: kopf.Memo, logger: Any,
                          **_: Any) -> None:
        await reconcile_indexjob(memo.kube, memo.locks, namespace, labels[LABEL_INDEXJOB], logger, memo.clock)

    return registry
