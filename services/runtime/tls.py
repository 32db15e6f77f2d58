"""TLS on every gRPC hop (and web's optional HTTPS), from certificate files reloaded on rotation.

Settings (:class:`Tls`, ``MMSEARCH_TLS_*``), in cert-manager's file names:
``cert_file``/``key_file`` (``tls.crt``/``tls.key``) are this process's
certificate: served on its port (the port then refuses plaintext), and shown as
the client certificate to a server that asks for one. ``ca_file`` (``ca.crt``)
is the bundle that verifies peers: setting it turns TLS on for every outgoing
gRPC hop of the process (web->serving, serving->preprocess, serving->Triton)
and, with ``client_auth``, checks client certificates (mutual TLS).

Rotation without a restart:
- Server side, :func:`server_credentials` hands gRPC a fetcher that it calls at
  each new handshake; the fetcher looks at the files' (mtime_ns, size, inode)
  and reads them again only when one changed. New connections get the new
  certificate; open ones go on with theirs.
- Client side, :class:`Reloading` holds what is built from the files (a
  ``grpc.aio`` channel, a Triton client) and builds it again when they changed
  (looked at no more than once a second, on use); the old one is closed once its
  calls had their time.
- A pair caught half-written (the key of one, the certificate of another, or a
  file changing while read) is not taken: the old one stays, a warning says why,
  and the next look tries again.
"""
from __future__ import annotations

import asyncio
import logging
import os
import ssl
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Generic, TypeVar

import grpc
from pydantic import model_validator

from mmsearch.core.settings import Group, setting
from mmsearch.services.runtime import tracing

log = logging.getLogger(__name__)

T = TypeVar("T")
S = TypeVar("S")
RECHECK_S = 1.0
"""A client looks at the files no more often than this."""


class Tls(Group):
    """TLS of a process's own port and of its outgoing gRPC calls (``MMSEARCH_TLS_*``)."""

    env_prefix = "TLS_"

    cert_file: Path | None = setting(
        None, description="This process's certificate chain (PEM; cert-manager's tls.crt): its port serves TLS "
                          "and refuses plaintext; also the client certificate when a server asks for one. "
                          "Re-read when it changes. Set with MMSEARCH_TLS_KEY_FILE.")
    key_file: Path | None = setting(
        None, description="Private key of MMSEARCH_TLS_CERT_FILE (PEM; cert-manager's tls.key).")
    ca_file: Path | None = setting(
        None, description="CA bundle that verifies peers (PEM; cert-manager's ca.crt): set, every outgoing gRPC "
                          "call of this process uses TLS and checks the server against it; with "
                          "MMSEARCH_TLS_CLIENT_AUTH, client certificates are checked against it too.")
    client_auth: bool = setting(
        False, description="Mutual TLS: this process's port requires a client certificate signed by "
                           "MMSEARCH_TLS_CA_FILE (needs MMSEARCH_TLS_CERT_FILE and MMSEARCH_TLS_CA_FILE).")

    @model_validator(mode="after")
    def _consistent(self) -> "Tls":
        for name, path in (("CERT_FILE", self.cert_file), ("KEY_FILE", self.key_file), ("CA_FILE", self.ca_file)):
            if path is not None and not path.is_file():
                raise ValueError(f"MMSEARCH_TLS_{name}={path}: no such file (mount the Secret holding it, or unset "
                                 f"the variable)")
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("MMSEARCH_TLS_CERT_FILE and MMSEARCH_TLS_KEY_FILE are set together (tls.crt and "
                             "tls.key of one certificate); set both or neither")
        if self.client_auth and (self.ca_file is None or self.cert_file is None):
            raise ValueError("MMSEARCH_TLS_CLIENT_AUTH=true needs MMSEARCH_TLS_CERT_FILE/MMSEARCH_TLS_KEY_FILE "
                             "(the port's certificate) and MMSEARCH_TLS_CA_FILE (to check client certificates)")
        read_material(self)  # fail at start on files that cannot serve, not at the first handshake
        return self

    @property
    def serves(self) -> bool:
        """This process's port speaks TLS."""
        return self.cert_file is not None

    @property
    def calls(self) -> bool:
        """This process's outgoing gRPC calls use TLS."""
        return self.ca_file is not None


class TlsError(ValueError):
    """Certificate files that cannot be used; the message names the variables."""


@dataclass(frozen=True)
class Material:
    """What the files held at one moment (PEM bytes; None where no file is set)."""

    cert: bytes | None
    key: bytes | None
    ca: bytes | None


Signature = tuple[tuple[int, int, int] | None, ...]


def _stat(path: Path | None) -> tuple[int, int, int] | None:
    if path is None:
        return None
    try:
        found = os.stat(path)
    except OSError:
        return None
    return found.st_mtime_ns, found.st_size, found.st_ino


def read_material(tls: Tls) -> Material:
    """Read and check the files: the key matches the certificate, the CA bundle parses. Raises :class:`TlsError`."""
    paths = (tls.cert_file, tls.key_file, tls.ca_file)
    try:
        cert, key, ca = (path.read_bytes() if path is not None else None for path in paths)
    except OSError as exc:
        raise TlsError(f"cannot read a TLS file (MMSEARCH_TLS_CERT_FILE/KEY_FILE/CA_FILE): {exc}") from None
    check = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        if cert is not None:
            check.load_cert_chain(tls.cert_file, tls.key_file)
        if ca is not None:
            check.load_verify_locations(cadata=ca.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise TlsError(f"the TLS files do not make a certificate, its key and a CA bundle "
                       f"(MMSEARCH_TLS_CERT_FILE={tls.cert_file}, MMSEARCH_TLS_KEY_FILE={tls.key_file}, "
                       f"MMSEARCH_TLS_CA_FILE={tls.ca_file}): {exc}") from None
    return Material(cert, key, ca)


class Watched:
    """The files of ``tls`` and what they held last; :meth:`fresh` gives new material after a change.

    Thread-safe: gRPC calls the server's fetcher from its own threads.
    """

    def __init__(self, tls: Tls):
        self.tls = tls
        self._lock = threading.Lock()
        self.signature = self._signature()
        self.material = read_material(tls)
        self.reloads = 0

    def _signature(self) -> Signature:
        return tuple(_stat(path) for path in (self.tls.cert_file, self.tls.key_file, self.tls.ca_file))

    def fresh(self) -> Material | None:
        """New material if the files changed since the last read and hold a whole pair; else None."""
        with self._lock:
            before = self._signature()
            if before == self.signature:
                return None
            try:
                material = read_material(self.tls)
            except TlsError as exc:
                log.warning("TLS files changed but cannot be used yet; keeping the previous ones",
                            extra={"error": str(exc)})
                return None
            if self._signature() != before:  # changed while read: take it at the next look
                return None
            self.signature, self.material = before, material
            self.reloads += 1
            log.info("TLS files reloaded", extra={"cert_file": str(self.tls.cert_file), "reloads": self.reloads})
            return material


def _server_config(material: Material) -> grpc.ServerCertificateConfiguration:
    return grpc.ssl_server_certificate_configuration([(material.key, material.cert)], root_certificates=material.ca)


def server_credentials(tls: Tls) -> tuple[grpc.ServerCredentials, Watched]:
    """Credentials of a TLS gRPC port whose certificate follows the files (see module doc)."""
    watched = Watched(tls)

    def fetch() -> grpc.ServerCertificateConfiguration | None:
        material = watched.fresh()
        return None if material is None else _server_config(material)

    credentials = grpc.dynamic_ssl_server_credentials(_server_config(watched.material), fetch,
                                                      require_client_authentication=tls.client_auth)
    return credentials, watched


def channel_credentials(material: Material) -> grpc.ChannelCredentials:
    """Client credentials: trust the CA bundle; show the certificate when there is one."""
    return grpc.ssl_channel_credentials(root_certificates=material.ca, private_key=material.key,
                                        certificate_chain=material.cert)


class Reloading(Generic[T]):
    """A client built from the TLS files, built again when they change (see module doc).

    ``build(credentials)`` makes it (credentials None: plaintext, never rebuilt);
    ``close(old)`` ends one, called ``grace`` seconds at most after it was
    replaced, so the calls it carries finish first.
    """

    def __init__(self, tls: Tls | None, build: Callable[[grpc.ChannelCredentials | None], T],
                 close: Callable[[T, float], Awaitable[None]], *, grace: float = 5.0):
        self._watched = Watched(tls) if tls is not None and tls.calls else None
        self._build, self._close, self._grace = build, close, grace
        self._current: T | None = None
        self._looked = time.monotonic()
        self._closing: dict[asyncio.Task, T] = {}  # replaced clients, closing once their calls had their time
        self._stubs: dict[Callable, object] = {}
        self._stubs_of: T | None = None

    @property
    def reloads(self) -> int:
        return self._watched.reloads if self._watched else 0

    def _credentials(self, material: Material | None) -> grpc.ChannelCredentials | None:
        return None if material is None else channel_credentials(material)

    def current(self) -> T:
        """The client to use now (built on first use, inside the running loop)."""
        if self._current is None:
            self._current = self._build(self._credentials(self._watched.material if self._watched else None))
        elif self._watched is not None and time.monotonic() - self._looked >= RECHECK_S:
            self._looked = time.monotonic()
            material = self._watched.fresh()
            if material is not None:
                old, self._current = self._current, self._build(self._credentials(material))
                task = asyncio.get_running_loop().create_task(self._close(old, self._grace))
                self._closing[task] = old
                task.add_done_callback(lambda done: self._closing.pop(done, None))
        return self._current

    def stub(self, cls: Callable[[T], S]) -> S:
        """``cls(current())``, made once per client (a gRPC stub of the current channel)."""
        current = self.current()
        if self._stubs_of is not current:
            self._stubs, self._stubs_of = {}, current
        if cls not in self._stubs:
            self._stubs[cls] = cls(current)
        return self._stubs[cls]  # type: ignore[return-value]

    async def close(self) -> None:
        """Close the current client and the replaced ones now (the process is stopping)."""
        current, self._current = self._current, None
        replaced, self._closing = self._closing, {}
        for task in replaced:
            task.cancel()
        for client in [*replaced.values(), *([current] if current is not None else [])]:
            await self._close(client, 0)


async def _close_channel(channel: grpc.aio.Channel, grace: float) -> None:
    await channel.close(grace or None)


def channel(address: str, tls: Tls | None, options: list, *, grace: float = 5.0) -> Reloading[grpc.aio.Channel]:
    """A ``grpc.aio`` channel to ``address``: TLS when ``tls.ca_file`` is set, plaintext otherwise."""

    def build(credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        traced = tracing.client_interceptors()  # none while tracing is off
        if credentials is None:
            return grpc.aio.insecure_channel(address, options=options, interceptors=traced)
        return grpc.aio.secure_channel(address, credentials, options=options, interceptors=traced)

    return Reloading(tls, build, _close_channel, grace=grace)


def _https_context(tls: Tls, material: Material) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(tls.cert_file, tls.key_file)
    if tls.client_auth:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cadata=material.ca.decode("ascii"))
    return context


def https_context(tls: Tls) -> ssl.SSLContext:
    """The ``ssl.SSLContext`` of an HTTPS port that follows the files.

    Every handshake starts on this context; its server-name callback (called with
    or without SNI) looks at the files at most once a second and, once they
    changed, moves the handshake to a context built from them, so a rotated
    certificate or CA bundle serves new connections without a restart.
    """
    watched = Watched(tls)
    base = _https_context(tls, watched.material)
    state = {"context": base, "looked": time.monotonic()}

    def follow(connection: ssl.SSLObject, server_name: str | None, context: ssl.SSLContext) -> None:
        if time.monotonic() - state["looked"] >= RECHECK_S:
            state["looked"] = time.monotonic()
            material = watched.fresh()
            if material is not None:
                try:
                    state["context"] = _https_context(tls, material)
                except (ssl.SSLError, OSError) as exc:  # they moved again since read: look again next time
                    watched.signature = ()
                    log.warning("TLS files changed but cannot be used yet", extra={"error": str(exc)})
        if state["context"] is not base:
            connection.context = state["context"]

    base.sni_callback = follow
    return base
