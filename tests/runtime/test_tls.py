"""TLS on a gRPC port of ours (the one server factory) and on our clients' channels, with test certificates:
what is refused (plaintext, another CA, an expired certificate, a missing or foreign client certificate)
and rotation without a restart (server and client side) with no failed call under load."""
from __future__ import annotations

import asyncio
import socket
import ssl

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.core.settings import SettingsError, load_settings
from mmsearch.services.runtime.server import start_server
from mmsearch.services.runtime.settings import GrpcSettings
from mmsearch.services.runtime.tls import Tls, TlsError, channel, channel_credentials, read_material
from tests.support.certs import Ca, Files, half_write, swap_pair, write_pair
from tests.support.loops import eventually_async

CHECK = health_pb2.HealthCheckRequest()


@pytest.fixture(scope="module")
def ca() -> Ca:
    return Ca.make("mmsearch test CA")


@pytest.fixture(scope="module")
def other_ca() -> Ca:
    return Ca.make("another CA")


def tls_settings(files: Files, **kwargs) -> GrpcSettings:
    return GrpcSettings(host="127.0.0.1", port=0, metrics_port=0, log_json=False, tls=files.settings(**kwargs))


def no_services(server: grpc.aio.Server) -> list[str]:
    return []


async def check(address: str, credentials: grpc.ChannelCredentials | None, timeout: float = 5.0):
    """One health check on a fresh channel (a fresh handshake)."""
    make = grpc.aio.insecure_channel if credentials is None else (
        lambda target: grpc.aio.secure_channel(target, credentials))
    async with make(address) as chan:
        return await health_pb2_grpc.HealthStub(chan).Check(CHECK, timeout=timeout)


def served_certificate(port: int, ca: bytes) -> bytes:
    """The certificate (DER) a new TLS connection to ``port`` is shown, checked against ``ca``."""
    context = ssl.create_default_context(cadata=ca.decode())
    context.set_alpn_protocols(["h2"])
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname="localhost") as wrapped:
            return wrapped.getpeercert(binary_form=True)


def der(pem: bytes) -> bytes:
    return ssl.PEM_cert_to_DER_cert(pem.decode())


def credentials(leaf=None, *, trust: bytes) -> grpc.ChannelCredentials:
    return grpc.ssl_channel_credentials(root_certificates=trust, private_key=leaf.key if leaf else None,
                                        certificate_chain=leaf.cert if leaf else None)


# settings


def test_cert_and_key_are_set_together(tmp_path, ca, monkeypatch):
    files = write_pair(tmp_path, ca.leaf())
    monkeypatch.setenv("MMSEARCH_TLS_CERT_FILE", str(files.cert))
    with pytest.raises(SettingsError, match="MMSEARCH_TLS_CERT_FILE and MMSEARCH_TLS_KEY_FILE are set together"):
        load_settings(GrpcSettings)


def test_client_auth_needs_a_ca_and_a_certificate(tmp_path, ca, monkeypatch):
    files = write_pair(tmp_path, ca.leaf())
    monkeypatch.setenv("MMSEARCH_TLS_CLIENT_AUTH", "true")
    monkeypatch.setenv("MMSEARCH_TLS_CA_FILE", str(files.ca))
    with pytest.raises(SettingsError, match="MMSEARCH_TLS_CLIENT_AUTH=true needs MMSEARCH_TLS_CERT_FILE"):
        load_settings(GrpcSettings)


def test_a_missing_file_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("MMSEARCH_TLS_CA_FILE", str(tmp_path / "ca.crt"))
    with pytest.raises(SettingsError, match="MMSEARCH_TLS_CA_FILE=.*: no such file"):
        load_settings(GrpcSettings)


def test_a_key_of_another_certificate_is_refused_at_start(tmp_path, ca, monkeypatch):
    files = write_pair(tmp_path, ca.leaf())
    tls = Tls(**files.settings())
    half_write(files, ca.leaf())
    with pytest.raises(TlsError, match="MMSEARCH_TLS_KEY_FILE"):
        read_material(tls)
    for name, path in (("CERT_FILE", files.cert), ("KEY_FILE", files.key)):
        monkeypatch.setenv(f"MMSEARCH_TLS_{name}", str(path))
    with pytest.raises(SettingsError, match="the TLS files do not make a certificate, its key"):
        load_settings(GrpcSettings)


# what a TLS port refuses


@pytest.fixture(scope="module")
async def tls_server(tmp_path_factory, ca):
    files = write_pair(tmp_path_factory.mktemp("server-tls"), ca.leaf())
    running = await start_server(tls_settings(files), no_services)
    yield running
    await running.stop(0)


async def test_a_client_that_trusts_the_ca_is_served(tls_server, ca):
    reply = await check(f"localhost:{tls_server.port}", credentials(trust=ca.pem))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    reply = await check(f"127.0.0.1:{tls_server.port}", credentials(trust=ca.pem))  # the IP SAN
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


async def test_plaintext_to_a_tls_port_is_refused(tls_server):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(f"127.0.0.1:{tls_server.port}", None, timeout=3)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_server_certificate_from_another_ca_is_refused(tls_server, other_ca):
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await check(f"127.0.0.1:{tls_server.port}", credentials(trust=other_ca.pem), timeout=3)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_an_expired_server_certificate_is_refused(tmp_path, ca):
    files = write_pair(tmp_path, ca.leaf(expired=True))
    running = await start_server(tls_settings(files), no_services)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await check(f"127.0.0.1:{running.port}", credentials(trust=ca.pem), timeout=3)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await running.stop(0)


async def test_mutual_tls_refuses_a_client_without_a_certificate_or_with_a_foreign_one(tmp_path, ca, other_ca):
    files = write_pair(tmp_path, ca.leaf())
    running = await start_server(tls_settings(files, client_auth=True), no_services)
    address = f"127.0.0.1:{running.port}"
    try:
        for refused_credentials in (credentials(trust=ca.pem), credentials(other_ca.leaf(), trust=ca.pem),
                                    credentials(ca.leaf(expired=True), trust=ca.pem)):
            with pytest.raises(grpc.aio.AioRpcError) as refused:
                await check(address, refused_credentials, timeout=3)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        reply = await check(address, credentials(ca.leaf("client"), trust=ca.pem))
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
    finally:
        await running.stop(0)


async def test_our_channel_shows_its_certificate_to_a_mutual_tls_port(tmp_path, ca):
    files = write_pair(tmp_path / "server", ca.leaf())
    client_files = write_pair(tmp_path / "client", ca.leaf("client"))
    running = await start_server(tls_settings(files, client_auth=True), no_services)
    chan = channel(f"127.0.0.1:{running.port}", Tls(**client_files.settings()), [])
    try:
        reply = await chan.stub(health_pb2_grpc.HealthStub).Check(CHECK, timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        # without the CA the channel is plaintext, which the port refuses
        plain = channel(f"127.0.0.1:{running.port}", Tls(), [])
        with pytest.raises(grpc.aio.AioRpcError):
            await plain.stub(health_pb2_grpc.HealthStub).Check(CHECK, timeout=3)
        await plain.close()
    finally:
        await chan.close()
        await running.stop(0)


# rotation


class Load:
    """``workers`` concurrent health checks in a loop on one of our channels, counting what they get."""

    def __init__(self, chan, workers: int = 8):
        self.chan, self.ok, self.failures, self.stopping = chan, 0, [], False
        self.tasks = [asyncio.create_task(self._worker()) for _ in range(workers)]

    async def _worker(self) -> None:
        while not self.stopping:
            try:
                await self.chan.stub(health_pb2_grpc.HealthStub).Check(CHECK, timeout=5)
                self.ok += 1
            except grpc.aio.AioRpcError as exc:
                self.failures.append(f"{exc.code().name}: {exc.details()}")

    async def more(self, n: int = 50) -> None:
        """Wait until ``n`` more calls succeeded."""
        target = self.ok + n
        await eventually_async(lambda: self.ok >= target or self.failures, f"{n} more calls")

    async def stop(self) -> None:
        self.stopping = True
        await asyncio.gather(*self.tasks)


async def served(port: int, trust: bytes, pem: bytes) -> None:
    await eventually_async(lambda: asyncio.to_thread(lambda: served_certificate(port, trust) == der(pem)),
                           "the port serving the rotated certificate", retry=(ssl.SSLError, OSError))


async def test_rotated_certificates_are_picked_up_without_a_restart_or_a_failed_call(tmp_path, ca):
    first, second = ca.leaf("first"), ca.leaf("second")
    files = write_pair(tmp_path / "server", first)
    client_files = write_pair(tmp_path / "client", ca.leaf("client"))
    client = Tls(ca_file=client_files.ca)  # the client trusts the CA bundle only
    running = await start_server(tls_settings(files), no_services)
    chan = channel(f"localhost:{running.port}", client, [], grace=5)
    load = Load(chan)
    try:
        await load.more()
        # a new certificate from the same CA
        swap_pair(files, second)
        await served(running.port, ca.pem, second.cert)
        await load.more()
        # a new CA: the clients trust both first, then the server moves to a certificate of the new one
        new_ca = Ca.make("next CA")
        swap_pair(client_files, ca.leaf("client"), ca=ca.pem + new_ca.pem)
        await eventually_async(lambda: chan.reloads >= 1, "the client channel rebuilt with both CAs")
        third = new_ca.leaf("third")
        swap_pair(files, third)
        await served(running.port, new_ca.pem, third.cert)
        await load.more()
        assert running.tls.reloads == 2
        # a fresh handshake of the rebuilt channel checks the new CA's certificate
        fresh = channel(f"localhost:{running.port}", client, [])
        assert (await fresh.stub(health_pb2_grpc.HealthStub).Check(CHECK, timeout=5)).status
        await fresh.close()
    finally:
        await load.stop()
        await chan.close()
        await running.stop(0)
    assert load.failures == []


async def test_a_half_written_pair_keeps_the_old_certificate(tmp_path, ca):
    first, second = ca.leaf("first"), ca.leaf("second")
    files = write_pair(tmp_path, first)
    running = await start_server(tls_settings(files), no_services)
    try:
        half_write(files, second)  # the new key beside the old certificate
        for _ in range(3):  # each handshake asks the files again; each keeps the old pair
            assert served_certificate(running.port, ca.pem) == der(first.cert)
            assert (await check(f"127.0.0.1:{running.port}", channel_credentials(read_material(Tls(ca_file=files.ca))))).status
        assert running.tls.reloads == 0
        swap_pair(files, second)  # the rotation completes
        await served(running.port, ca.pem, second.cert)
    finally:
        await running.stop(0)
