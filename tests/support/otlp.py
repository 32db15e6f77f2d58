"""A real OTLP/gRPC trace receiver: the collector's TraceService (opentelemetry-proto) on a grpc server.

``with OtlpReceiver() as receiver:`` listens on 127.0.0.1 (port 0); services
export to ``receiver.endpoint`` (``OTEL_EXPORTER_OTLP_ENDPOINT``) and tests read
``receiver.spans()``: every span received, flattened with its service name.
"""
from __future__ import annotations

import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


@dataclass(frozen=True)
class Span:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent_id: str
    start_ns: int
    end_ns: int
    kind: int
    status: int
    attributes: dict

    @property
    def ms(self) -> float:
        return (self.end_ns - self.start_ns) / 1e6


def _value(any_value) -> object:
    which = any_value.WhichOneof("value")
    return getattr(any_value, which) if which else None


class _Traces(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.received: list[Span] = []

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        spans = []
        for resource_spans in request.resource_spans:
            service = next((_value(a.value) for a in resource_spans.resource.attributes if a.key == "service.name"), "")
            for scope in resource_spans.scope_spans:
                for s in scope.spans:
                    spans.append(Span(str(service), s.name, s.trace_id.hex(), s.span_id.hex(), s.parent_span_id.hex(),
                                      s.start_time_unix_nano, s.end_time_unix_nano, s.kind, s.status.code,
                                      {a.key: _value(a.value) for a in s.attributes}))
        with self.lock:
            self.received.extend(spans)
        return trace_service_pb2.ExportTraceServiceResponse()


class OtlpReceiver:
    def __init__(self) -> None:
        self._traces = _Traces()
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(self._traces, self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def spans(self) -> list[Span]:
        with self._traces.lock:
            return list(self._traces.received)

    def __enter__(self) -> "OtlpReceiver":
        self._server.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.stop(0)


def env(receiver: OtlpReceiver) -> dict[str, str]:
    """The variables that turn a service's tracing on, exporting to ``receiver`` within 50 ms of a span's end."""
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
            "OTEL_BSP_SCHEDULE_DELAY": "50"}
