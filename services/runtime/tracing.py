"""Traces across hops: W3C ``traceparent`` in, spans out over OTLP, the trace id in every log line.

Off by default, and then nothing of OpenTelemetry runs: :func:`span` hands back
one shared null context, no interceptor is installed, no header is parsed or
sent. :func:`configure` turns it on from the standard variables:

- ``OTEL_TRACES_EXPORTER``: ``otlp`` (OTLP over gRPC) or ``console`` (spans
  as JSON on stdout) turn it on, ``none`` keeps it off; unset, it is on when
  ``OTEL_EXPORTER_OTLP_ENDPOINT`` or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``
  names a collector (:func:`exporter_choice`, pure);
- ``OTEL_SDK_DISABLED=true`` keeps it off whatever else is set;
- the exporter, sampler, batch processor and resource read their own
  ``OTEL_*`` variables (``OTEL_EXPORTER_OTLP_INSECURE``, ``OTEL_TRACES_SAMPLER``,
  ``OTEL_BSP_SCHEDULE_DELAY``, ``OTEL_RESOURCE_ATTRIBUTES``, ...);
  ``OTEL_SERVICE_NAME`` overrides the role's name (``mmsearch-serving``...).

When on: every gRPC server span continues the caller's ``traceparent``
(:class:`ServerInterceptor`, installed by the server factory), every gRPC
client call opens a client span and sends it on (:class:`ClientInterceptor`,
on the channels of :func:`mmsearch.services.runtime.tls.channel`; Triton's
client gets :func:`headers`), and every log record made inside a span carries
``trace_id`` and ``span_id`` (a log record factory, whatever the handler).
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Any, Iterator, Mapping

import grpc

log = logging.getLogger(__name__)

EXPORTERS = ("otlp", "console", "none")
_NULL = contextlib.nullcontext()
_tracer: Any = None  # an opentelemetry Tracer while tracing is on


def exporter_choice(environ: Mapping[str, str]) -> str | None:
    """The exporter the ``OTEL_*`` variables ask for, None when tracing stays off (see module doc). Pure."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return None
    chosen = environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if not chosen:
        named = environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        return "otlp" if named else None
    if chosen not in EXPORTERS:
        raise ValueError(f"OTEL_TRACES_EXPORTER={chosen!r} is not supported here; use one of {list(EXPORTERS)} "
                         "(otlp sends to OTEL_EXPORTER_OTLP_ENDPOINT over gRPC)")
    return None if chosen == "none" else chosen


def enabled() -> bool:
    return _tracer is not None


def configure(service: str, environ: Mapping[str, str] | None = None) -> bool:
    """Turn tracing on for this process when the variables say so (see module doc); True when on."""
    global _tracer
    environ = os.environ if environ is None else environ
    try:
        choice = exporter_choice(environ)
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    if choice is None or _tracer is not None:
        return _tracer is not None
    from opentelemetry import trace
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter

    if choice == "otlp":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        exporter: Any = OTLPSpanExporter()
    else:
        exporter = ConsoleSpanExporter()
    name = environ.get("OTEL_SERVICE_NAME") or service
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _tracer = trace.get_tracer("mmsearch")
    _log_with_trace_ids()
    log.info("tracing on", extra={"exporter": choice, "service_name": name})
    return True


def shutdown() -> None:
    """Export what is buffered and stop (a process's last step; the SDK also does it at exit)."""
    if _tracer is not None:
        from opentelemetry import trace
        provider = trace.get_tracer_provider()
        if hasattr(provider, "shutdown"):
            provider.shutdown()


def span(name: str, attributes: Mapping[str, Any] | None = None, *, kind: str = "INTERNAL"):
    """A context manager: a span named ``name``, the current one inside it; the shared null context when off."""
    if _tracer is None:
        return _NULL
    from opentelemetry.trace import SpanKind
    return _tracer.start_as_current_span(name, kind=SpanKind[kind], attributes=dict(attributes or {}))


def trace_id() -> str | None:
    """The current trace's id (32 hex digits), None when off or outside a span."""
    if _tracer is None:
        return None
    from opentelemetry import trace
    context = trace.get_current_span().get_span_context()
    return format(context.trace_id, "032x") if context.is_valid else None


def headers() -> dict[str, str] | None:
    """``traceparent`` (and ``tracestate``) of the current span for an outgoing call; None when off."""
    if _tracer is None:
        return None
    from opentelemetry.propagate import inject
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


@contextlib.contextmanager
def continued(carrier: Mapping[str, str], name: str, attributes: Mapping[str, Any] | None = None,
              kind: str = "SERVER") -> Iterator[Any]:
    """A span continuing the caller's ``traceparent`` in ``carrier`` (a new trace without one)."""
    from opentelemetry.propagate import extract
    from opentelemetry.trace import SpanKind
    with _tracer.start_as_current_span(name, context=extract(carrier), kind=SpanKind[kind],
                                       attributes=dict(attributes or {})) as current:
        yield current


def set_error(current: Any, code: str, message: str = "") -> None:
    """Mark ``current`` failed with a status word (a gRPC code name, an HTTP status)."""
    from opentelemetry.trace import Status, StatusCode
    current.set_attribute("error.type", code)
    current.set_status(Status(StatusCode.ERROR, message[:200] or code))


def _log_with_trace_ids() -> None:
    make = logging.getLogRecordFactory()

    def record(*args, **kwargs) -> logging.LogRecord:
        made = make(*args, **kwargs)
        from opentelemetry import trace
        context = trace.get_current_span().get_span_context()
        if context.is_valid:
            made.trace_id, made.span_id = format(context.trace_id, "032x"), format(context.span_id, "016x")
        return made

    logging.setLogRecordFactory(record)


def _code(context: grpc.aio.ServicerContext) -> str:
    code = context.code()
    if code is None:
        return "OK"
    return code.name if isinstance(code, grpc.StatusCode) else str(code)


class ServerInterceptor(grpc.aio.ServerInterceptor):
    """A server span per unary call, continuing the caller's ``traceparent`` (installed only when on)."""

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        carrier = {k: v for k, v in (handler_call_details.invocation_metadata or ()) if isinstance(v, str)}
        inner = handler.unary_unary
        service, _, name = method.lstrip("/").partition("/")

        async def traced(request, context):
            with continued(carrier, method.lstrip("/"), {"rpc.system": "grpc", "rpc.service": service,
                                                         "rpc.method": name}) as current:
                try:
                    return await inner(request, context)
                finally:
                    code = _code(context)
                    current.set_attribute("rpc.grpc.status_code", code)
                    if code != "OK":
                        set_error(current, code, context.details() or "")

        return grpc.unary_unary_rpc_method_handler(traced, request_deserializer=handler.request_deserializer,
                                                   response_serializer=handler.response_serializer)


class ClientInterceptor(grpc.aio.UnaryUnaryClientInterceptor):
    """A client span per unary call, its ``traceparent`` sent in the call's metadata (installed only when on)."""

    async def intercept_unary_unary(self, continuation, client_call_details, request):
        method = client_call_details.method
        method = method.decode() if isinstance(method, bytes) else method
        service, _, name = method.lstrip("/").partition("/")
        with span(method.lstrip("/"), {"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
                  kind="CLIENT") as current:
            metadata = grpc.aio.Metadata(*(client_call_details.metadata or ()), *(headers() or {}).items())
            details = grpc.aio.ClientCallDetails(method=client_call_details.method, timeout=client_call_details.timeout,
                                                 metadata=metadata, credentials=client_call_details.credentials,
                                                 wait_for_ready=client_call_details.wait_for_ready)
            call = await continuation(details, request)
            try:
                await call
            except grpc.aio.AioRpcError as exc:
                set_error(current, exc.code().name, exc.details() or "")
            return call


def server_interceptors() -> list[grpc.aio.ServerInterceptor]:
    return [ServerInterceptor()] if _tracer is not None else []


def client_interceptors() -> list[grpc.aio.ClientInterceptor]:
    return [ClientInterceptor()] if _tracer is not None else []
