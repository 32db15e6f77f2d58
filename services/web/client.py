"""The web service's gRPC client of serving: one ``grpc.aio`` channel, reused by every request.

The channel is created inside the running event loop (grpc.aio needs one)
and reconnects by itself when serving restarts; every call carries the
request deadline, so a dead back end costs at most that long.
"""
from __future__ import annotations

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.core.channels import channel_options
from mmsearch.services.runtime.tls import Tls, channel as tls_channel
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from mmsearch.services.web.params import FeedbackEvent, SearchQuery

Metadata = tuple[tuple[str, str], ...]
"""gRPC metadata of a call: the relay key and the caller (:func:`mmsearch.services.web.access.Gate.relay_metadata`)."""
RETRIEVAL_SERVICE = retrieval_pb2.DESCRIPTOR.services_by_name["RetrievalService"].full_name
OPS = {"eq": retrieval_pb2.Filter.EQ, "in": retrieval_pb2.Filter.IN, "not": retrieval_pb2.Filter.NOT,
       "range": retrieval_pb2.Filter.RANGE}


def search_request(query: SearchQuery) -> retrieval_pb2.SearchRequest:
    """The gRPC request of a validated API query (filter values travel as text; serving types them). Pure."""
    request = retrieval_pb2.SearchRequest(scene=query.scene, top_k=query.top_k, user_id=query.user_id,
                                          diversify=query.diversify, facets=query.facets, page_token=query.page_token,
                                          sort=query.sort, collapse=query.collapse, highlight=query.highlight)
    if query.similar_to is not None:
        request.similar_to = query.similar_to
    elif query.image is not None:
        request.image = query.image
    else:
        request.text = query.text or ""
    for f in query.filters:
        added = request.filters.add(field=f.field, op=OPS[f.op])
        added.values.extend(retrieval_pb2.FilterValue(text=v) for v in f.values)
        if f.low is not None:
            added.min = f.low
        if f.high is not None:
            added.max = f.high
    return request


class ServingClient:
    def __init__(self, address: str, timeout: float, max_message_bytes: int, tls: Tls | None = None):
        self.address = address
        self.timeout = timeout
        # Retries the connection soon after serving comes back (short reconnect back-off); TLS when
        # tls.ca_file is set, the channel built again when the certificate files change.
        self.channel = tls_channel(address, tls, channel_options(max_message_bytes), grace=timeout)

    @property
    def retrieval(self) -> retrieval_pb2_grpc.RetrievalServiceStub:
        return self.channel.stub(retrieval_pb2_grpc.RetrievalServiceStub)

    @property
    def health(self) -> health_pb2_grpc.HealthStub:
        return self.channel.stub(health_pb2_grpc.HealthStub)

    async def search(self, query: SearchQuery, metadata: Metadata = ()) -> retrieval_pb2.SearchResponse:
        return await self.retrieval.Search(search_request(query), timeout=self.timeout, metadata=metadata)

    async def feedback(self, event: FeedbackEvent, metadata: Metadata = ()) -> retrieval_pb2.FeedbackResponse:
        request = retrieval_pb2.FeedbackRequest(feedback_token=event.feedback_token, item_id=event.item_id,
                                                event=event.event, dwell_seconds=event.dwell_seconds)
        return await self.retrieval.Feedback(request, timeout=self.timeout, metadata=metadata)

    async def list_scenes(self, metadata: Metadata = ()) -> retrieval_pb2.ListScenesResponse:
        return await self.retrieval.ListScenes(retrieval_pb2.ListScenesRequest(), timeout=self.timeout,
                                               metadata=metadata)

    async def ready(self) -> tuple[bool, str]:
        """(True, "SERVING") when serving's health service says the RetrievalService serves."""
        try:
            reply = await self.health.Check(
                health_pb2.HealthCheckRequest(service=RETRIEVAL_SERVICE), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as exc:
            return False, f"{exc.code().name}: {exc.details()}"
        status = health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)
        return reply.status == health_pb2.HealthCheckResponse.SERVING, status

    async def close(self) -> None:
        await self.channel.close()
