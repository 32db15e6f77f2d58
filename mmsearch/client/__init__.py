"""mmsearch's Python client: search, scenes and feedback over serving's gRPC API.

Installed alone with ``pip install "mmsearch[client]"`` (grpcio and protobuf;
nothing of the engine): it imports only the standard library, grpc, protobuf
and the generated stubs in :mod:`mmsearch.v1` (an import-linter contract keeps
it so). docs/client.md has runnable examples.

    from mmsearch.client import Client, field

    with Client("localhost:50052", api_key=KEY) as client:
        page = client.search("t2t", "parse json", top_k=5, filters=[field("category").eq("json")])
        for hit in page.hits:
            print(hit.id, hit.score, hit.summary)
"""
from mmsearch.client.api import AsyncClient, Client
from mmsearch.client.errors import (DeadlineExceeded, FailedPrecondition, InvalidArgument, MmsearchError, NotFound,
                                    PageExpired, PermissionDenied, RateLimited, Unauthenticated, Unavailable)
from mmsearch.client.filters import FieldRef, Filter, field
from mmsearch.client.results import Facet, FeedbackResult, Highlight, Hit, Retrieval, SceneField, SceneInfo, SearchPage
from mmsearch.client.transport import Retry, Tls

__all__ = [
    "AsyncClient", "Client", "DeadlineExceeded", "FailedPrecondition", "Facet", "FeedbackResult", "FieldRef",
    "Filter", "Highlight", "Hit", "InvalidArgument", "MmsearchError", "NotFound", "PageExpired", "PermissionDenied",
    "RateLimited", "Retrieval", "Retry", "SceneField", "SceneInfo", "SearchPage", "Tls", "Unauthenticated",
    "Unavailable", "field",
]
