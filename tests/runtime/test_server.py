"""The shared gRPC server factory: health, reflection, /metrics counters, port errors, SIGTERM shutdown."""
from __future__ import annotations

import asyncio
import json
import re
import urllib.request

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from mmsearch.services.runtime.server import start_server
from mmsearch.services.runtime.settings import GrpcSettings
from tests.support.processes import start_service, wait_serving
from tests.preprocess import model_folders

HEALTH = "grpc.health.v1.Health"


def local_settings(**overrides) -> GrpcSettings:
    return GrpcSettings(**{"host": "127.0.0.1", "port": 0, "metrics_host": "127.0.0.1", "metrics_port": 0,
                              **overrides})


def no_services(server: grpc.aio.Server) -> list[str]:
    return []


@pytest.fixture(scope="module")
async def server():
    running = await start_server(local_settings(), no_services)
    yield running
    await running.stop(0)


@pytest.fixture(scope="module")
async def channel(server):
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as chan:
        yield chan


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        return response.read().decode()


def counter(text: str, method: str, code: str) -> float:
    pattern = (rf'^mmsearch_grpc_requests_total\{{grpc_code="{code}",grpc_method="{method}",'
               rf'grpc_service="{re.escape(HEALTH)}"\}} (\S+)$')
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


async def test_health_follows_set_serving(server, channel):
    health = health_pb2_grpc.HealthStub(channel)
    assert (await health.Check(health_pb2.HealthCheckRequest())).status == health_pb2.HealthCheckResponse.SERVING
    await server.set_serving(False)
    try:
        status = (await health.Check(health_pb2.HealthCheckRequest())).status
        assert status == health_pb2.HealthCheckResponse.NOT_SERVING
    finally:
        await server.set_serving(True)


async def test_reflection_lists_the_services(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    call = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = set()
    async for response in call:
        names |= {service.name for service in response.list_services_response.service}
        break
    assert {HEALTH, "grpc.reflection.v1alpha.ServerReflection"} <= names


async def test_metrics_count_requests_by_method_and_code(server, channel):
    health = health_pb2_grpc.HealthStub(channel)
    before = await asyncio.to_thread(scrape, server.metrics_port)
    for _ in range(3):
        await health.Check(health_pb2.HealthCheckRequest())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health.Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert info.value.code() == grpc.StatusCode.NOT_FOUND
    after = await asyncio.to_thread(scrape, server.metrics_port)
    assert counter(after, "Check", "OK") == counter(before, "Check", "OK") + 3
    assert counter(after, "Check", "NOT_FOUND") == counter(before, "Check", "NOT_FOUND") + 1
    assert 'mmsearch_grpc_request_duration_seconds_bucket{grpc_code="OK",grpc_method="Check"' in after


async def test_port_in_use_is_a_clear_error(server):
    with pytest.raises(OSError, match=rf"cannot bind .*:{server.port} \(MMSEARCH_HOST/MMSEARCH_PORT\)"):
        await start_server(local_settings(port=server.port), no_services, metrics=False)


def test_sigterm_stops_serve_preprocess_gracefully(tmp_path):
    folder = model_folders.minilm(tmp_path / "minilm")
    service = start_service("preprocess", {"MMSEARCH_MODELS": json.dumps({"minilm": str(folder)})})
    try:
        wait_serving(service.target)
        assert "mmsearch_grpc_requests_total" in scrape(service.metrics_port)
    finally:
        code = service.stop(timeout=15)
    assert code == 0, "\n".join(service.lines[-20:])
    assert "shutting down" in service.messages()


async def test_a_malformed_request_is_invalid_argument_naming_the_message_type(server, channel):
    """grpcio's default is UNKNOWN with the protobuf exception's repr; every service answers this instead."""
    raw = channel.unary_unary(f"/{HEALTH}/Check")  # no serializer: the bytes go as they are
    before = await asyncio.to_thread(scrape, server.metrics_port)
    for garbage in (b"\xff\xff\xff\xff\x0f", b"\x0a\x05ab", b"\x08"):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await raw(garbage, timeout=5)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert info.value.details() == (f"/{HEALTH}/Check: the request is not a valid grpc.health.v1.HealthCheckRequest "
                                        "message; send a serialized grpc.health.v1.HealthCheckRequest (see the "
                                        "service's .proto)")
        assert "<class" not in info.value.details() and "DecodeError" not in info.value.details()
    assert (await raw(b"", timeout=5)) is not None  # the empty message is a valid (default) request
    after = await asyncio.to_thread(scrape, server.metrics_port)
    assert counter(after, "Check", "INVALID_ARGUMENT") == counter(before, "Check", "INVALID_ARGUMENT") + 3


async def test_a_grpc_error_is_described_by_its_details_not_its_debug_string(channel):
    from mmsearch.core.milvus.connection import short_error

    with pytest.raises(grpc.aio.AioRpcError) as info:
        await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="no.such.Service"))
    assert "debug_error_string" in str(info.value)
    assert short_error(info.value) == "NOT_FOUND"  # no details: its code
