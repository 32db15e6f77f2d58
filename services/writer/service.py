"""The gRPC DocumentService: thin handlers over :class:`~mmsearch.services.writer.writes.Writer`.

- Access: Upsert and Delete need scope ``write`` and the scene, Get scope
  ``search`` and the scene (:data:`ACCESS_RULES`); every Upsert and Delete
  leaves an audit line (action ``upsert`` / ``delete``, the key, the scene,
  the count, the outcome).
- Backpressure: documents admitted and not yet answered are counted across
  calls; a call that would take the count over ``MMSEARCH_WRITER_QUEUE_DOCUMENTS``
  is refused RESOURCE_EXHAUSTED with ``retry-after`` (trailing metadata,
  seconds), before any work. A batch over ``MMSEARCH_MAX_BATCH_DOCUMENTS`` is
  INVALID_ARGUMENT naming the limit. Together with the gRPC message size
  this bounds the writer's memory whatever clients send.
- Errors: an unknown scene is NOT_FOUND; bad items are per-item results,
  never a failed call; a store that fails is UNAVAILABLE (nothing of the
  batch is acknowledged; what was logged is repaired, see
  :mod:`mmsearch.services.writer.writes`).
"""
from __future__ import annotations

import asyncio
import json
import logging

import grpc
from google.protobuf import json_format, struct_pb2

from mmsearch.core.documents import whole_numbers as numbers
from mmsearch.core.errors import MmsearchError
from mmsearch.services.runtime.access import CALLER, Rule, peer_host
from mmsearch.services.runtime.audit import audit
from mmsearch.services.writer.settings import WriterSettings
from mmsearch.services.writer.writes import NOT_FOUND, REFUSED, UNCHANGED, Outcome, UnknownScene, Writer
from mmsearch.v1 import documents_pb2, documents_pb2_grpc

log = logging.getLogger(__name__)
_SERVICE = "/mmsearch.v1.DocumentService"
ACCESS_RULES = {
    f"{_SERVICE}/Upsert": Rule("write", "upsert", lambda request: request.scene),
    f"{_SERVICE}/Delete": Rule("write", "delete", lambda request: request.scene),
    f"{_SERVICE}/Get": Rule("search", "get", lambda request: request.scene),
}
STATUS = {"applied": documents_pb2.ITEM_STATUS_APPLIED, UNCHANGED: documents_pb2.ITEM_STATUS_UNCHANGED,
          REFUSED: documents_pb2.ITEM_STATUS_REFUSED, NOT_FOUND: documents_pb2.ITEM_STATUS_NOT_FOUND}


def results(outcomes: list[Outcome]) -> list[documents_pb2.ItemResult]:
    return [documents_pb2.ItemResult(index=o.index, id=o.id, status=STATUS[o.status], field=o.field, reason=o.reason)
            for o in outcomes]


class Queue:
    """Documents admitted and not yet answered (see the module doc)."""

    def __init__(self, limit: int):
        self.limit, self.held = limit, 0

    def admit(self, n: int) -> bool:
        if self.held + n > self.limit:
            return False
        self.held += n
        return True

    def release(self, n: int) -> None:
        self.held -= n


class DocumentServicer(documents_pb2_grpc.DocumentServiceServicer):
    def __init__(self, writer: Writer, settings: WriterSettings):
        self.writer, self.settings = writer, settings
        self.queue = Queue(settings.writes.queue_documents)

    async def _admitted(self, context, action: str, scene: str, n: int):
        limit = self.settings.limits.batch_documents
        if n > limit:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{n} items in one {action}: over the limit of {limit} (MMSEARCH_MAX_BATCH_DOCUMENTS); "
                                "split the batch")
        if not self.queue.admit(n):
            caller = CALLER.get()
            audit(action, "rate_limited", caller.key_id if caller else "anonymous", scene=scene, count=n,
                  client=peer_host(context.peer()), reason="write queue full")
            context.set_trailing_metadata((("retry-after", str(max(1, round(self.settings.writes.retry_after_seconds)))),))
            await context.abort(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"the write queue is full ({self.queue.held} documents waiting, "
                                f"MMSEARCH_WRITER_QUEUE_DOCUMENTS={self.queue.limit}); retry after "
                                f"{self.settings.writes.retry_after_seconds:g} s")

    async def _run(self, context, action: str, scene: str, n: int, work):
        """Run ``work`` in a thread inside the queue; map failures to status codes; audit writes."""
        await self._admitted(context, action, scene, n)
        caller = CALLER.get()
        key_id = caller.key_id if caller else "anonymous"
        try:
            answer = await asyncio.to_thread(work)
        except UnknownScene as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except MmsearchError as exc:
            if action != "get":
                audit(action, "error", key_id, scene=scene, count=n, client=peer_host(context.peer()), reason=str(exc))
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except Exception as exc:  # a store down or failing: nothing of this call is acknowledged
            log.warning("%s on scene %s failed: %s", action, scene, exc)
            if action != "get":
                audit(action, "unavailable", key_id, scene=scene, count=n, client=peer_host(context.peer()),
                      reason=str(exc)[:300])
            await context.abort(grpc.StatusCode.UNAVAILABLE,
                                f"the stores did not take the {action} ({type(exc).__name__}: {str(exc)[:300]}); "
                                "nothing of it was acknowledged: retry it (a retry of the same content is a no-op)")
        finally:
            self.queue.release(n)
        if action != "get":
            audit(action, "ok", key_id, scene=scene, count=n, client=peer_host(context.peer()))
        return answer

    async def Upsert(self, request, context):
        docs = [(d.id if d.HasField("id") else None, numbers(json_format.MessageToDict(d.fields)), bytes(d.image),
                 d.image_url)
                for d in request.documents]
        collection, position, outcomes = await self._run(
            context, "upsert", request.scene, len(docs), lambda: self.writer.upsert(request.scene, docs))
        return documents_pb2.WriteResponse(results=results(outcomes), collection=collection, position=position)

    async def Delete(self, request, context):
        ids = [int(i) for i in request.ids]
        collection, position, outcomes = await self._run(
            context, "delete", request.scene, len(ids), lambda: self.writer.delete(request.scene, ids))
        return documents_pb2.WriteResponse(results=results(outcomes), collection=collection, position=position)

    async def Get(self, request, context):
        ids = [int(i) for i in request.ids]
        collection, found, missing = await self._run(
            context, "get", request.scene, len(ids), lambda: self.writer.get(request.scene, ids))
        documents = []
        for doc in found:
            fields = struct_pb2.Struct()
            fields.update(json.loads(json.dumps({k: v for k, v in doc.items() if k not in ("_id", "content_sha256")},
                                                default=str)))
            documents.append(documents_pb2.StoredDocument(id=int(doc["_id"]), fields=fields,
                                                          content_sha256=doc["content_sha256"]))
        return documents_pb2.GetResponse(documents=documents, missing=missing, collection=collection)


def register(servicer: DocumentServicer):
    def add(server: grpc.aio.Server):
        documents_pb2_grpc.add_DocumentServiceServicer_to_server(servicer, server)
        return [documents_pb2.DESCRIPTOR.services_by_name["DocumentService"].full_name]

    return add
