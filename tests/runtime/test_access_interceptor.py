"""The gRPC access interceptor on a bare server: a method with no access rule is refused (new methods are born
protected) while health stays public; a method with a rule sees the caller; and the pure helpers."""
from __future__ import annotations

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.core.access.keyring import KeyRing
from mmsearch.core.access.keys import mint, parse_key_file
from mmsearch.core.access.policy import Refusal, anonymous_principal
from mmsearch.services.runtime.access import CALLER, AccessInterceptor, Rule, peer_host, relayed
from mmsearch.services.runtime.server import start_server
from mmsearch.services.runtime.settings import GrpcSettings


def echo(request: bytes, context) -> bytes:
    caller = CALLER.get()
    return (caller.key_id if caller else "nobody").encode()


def register(server: grpc.aio.Server) -> list[str]:
    handlers = {name: grpc.unary_unary_rpc_method_handler(echo) for name in ("Known", "New")}
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("test.Echo", handlers),))
    return ["test.Echo"]


@pytest.fixture
async def address(tmp_path):
    key, line = mint(["search"])
    (tmp_path / "keys.jsonl").write_text(line + "\n")
    gate = AccessInterceptor(KeyRing(tmp_path / "keys.jsonl"), anonymous_principal("*"),
                             {"/test.Echo/Known": Rule("search", "echo")})
    settings = GrpcSettings(host="127.0.0.1", port=0, metrics_host="127.0.0.1", metrics_port=0)
    running = await start_server(settings, register, interceptors=[gate])
    yield f"127.0.0.1:{running.port}", key
    await running.stop(0)


async def test_a_method_without_a_rule_is_refused_and_health_is_public(address):
    target, key = address
    async with grpc.aio.insecure_channel(target) as channel:
        known = channel.unary_unary("/test.Echo/Known")
        assert await known(b"", timeout=10) == b"anonymous"
        assert await known(b"", timeout=10, metadata=(("authorization", f"Bearer {key}"),)) == key.split("_")[1].encode()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await channel.unary_unary("/test.Echo/New")(b"", timeout=10, metadata=(("authorization", f"Bearer {key}"),))
        assert err.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "/test.Echo/New has no access rule" in err.value.details()
        reply = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=10)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING


def test_peer_addresses_and_relaying_are_pure():
    assert peer_host("ipv4:10.1.2.3:5000") == "10.1.2.3"
    assert peer_host("ipv6:[::1]:5000") == "::1"
    assert peer_host(None) == "unknown"
    relay_key, relay_line = mint(["relay"])
    user_key, user_line = mint(["search"], ["t2t"])
    keys = parse_key_file(f"{relay_line}\n{user_line}\n")
    relay = keys[relay_key.split("_")[1]].principal
    user = keys[user_key.split("_")[1]].principal
    assert relayed(relay, user.key_id, keys, None) == user
    assert relayed(relay, "anonymous", keys, anonymous_principal("t2t")).key_id == "anonymous"
    for principal, caller, words in ((user, user.key_id, "only from a key with scope 'relay'"),
                                     (relay, "0123456789ab", "not in this service's key file"),
                                     (relay, "anonymous", "anonymous access is off")):
        with pytest.raises(Refusal, match=words):
            relayed(principal, caller, keys, None)
