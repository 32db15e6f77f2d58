"""Channels, credentials, deadlines and retries of the client (no gRPC call is made here).

- :class:`Tls`: ``ca_file`` (the CA bundle that verifies serving; None: the
  system's roots), ``cert_file``/``key_file`` (a client certificate, for a
  serving that requires mutual TLS), ``server_name`` (the name to check the
  server's certificate against when the address does not carry it).
- :func:`key_metadata`: an API key travels as ``authorization: Bearer <key>``
  metadata on every call (docs/access.md).
- :class:`Retry` and :class:`Attempts`: one deadline covers a call and all its
  retries; only ``UNAVAILABLE`` of an idempotent method is tried again, after
  an exponential back-off with jitter, while the deadline leaves time for it.
"""
from __future__ import annotations

import random
import time
from dataclasses import dataclass
from pathlib import Path

import grpc

from mmsearch.client.errors import InvalidArgument, error_of

MAX_MESSAGE_BYTES = 64 * 1024 * 1024


@dataclass(frozen=True)
class Tls:
    """TLS to serving (see module doc); every file is read when the client is made."""

    ca_file: str | Path | None = None
    cert_file: str | Path | None = None
    key_file: str | Path | None = None
    server_name: str | None = None

    def credentials(self) -> grpc.ChannelCredentials:
        if (self.cert_file is None) != (self.key_file is None):
            raise InvalidArgument("Tls: give cert_file and key_file together (a client certificate and its key)",
                                  field="tls")
        pem = {name: _read(name, getattr(self, name)) for name in ("ca_file", "cert_file", "key_file")}
        return grpc.ssl_channel_credentials(root_certificates=pem["ca_file"], private_key=pem["key_file"],
                                            certificate_chain=pem["cert_file"])


def _read(name: str, path: str | Path | None) -> bytes | None:
    if path is None:
        return None
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise InvalidArgument(f"Tls {name} {str(path)!r} cannot be read ({exc.strerror})", field="tls") from None


def channel_options(tls: Tls | None, max_message_bytes: int = MAX_MESSAGE_BYTES) -> list[tuple[str, object]]:
    """Message limits, calls spread over every address the target resolves to, and the TLS name override."""
    options: list[tuple[str, object]] = [("grpc.max_send_message_length", max_message_bytes),
                                         ("grpc.max_receive_message_length", max_message_bytes),
                                         ("grpc.lb_policy_name", "round_robin")]
    if tls is not None and tls.server_name:
        options.append(("grpc.ssl_target_name_override", tls.server_name))
    return options


def credentials_of(tls: Tls | bool | None) -> tuple[Tls | None, grpc.ChannelCredentials | None]:
    """``tls``: None or False (plaintext), True (TLS checked against the system's roots) or a :class:`Tls`."""
    if tls is None or tls is False:
        return None, None
    chosen = Tls() if tls is True else tls
    if not isinstance(chosen, Tls):
        raise InvalidArgument(f"tls is True, False, None or mmsearch.client.Tls(...), not {type(tls).__name__}",
                              field="tls")
    return chosen, chosen.credentials()


def key_metadata(api_key: str | None) -> tuple[tuple[str, str], ...]:
    if api_key is None:
        return ()
    if not isinstance(api_key, str) or not api_key or not api_key.isascii() or any(c.isspace() for c in api_key):
        raise InvalidArgument("api_key is the key as minted (mms_<id>_<secret>): a non-empty ASCII string with no "
                              "spaces", field="api_key")
    return (("authorization", f"Bearer {api_key}"),)


@dataclass(frozen=True)
class Retry:
    """``attempts`` tries in all (1: none again); waits start at ``initial_s`` and grow by ``multiplier`` up to
    ``max_s``, each drawn between half and all of that (jitter)."""

    attempts: int = 4
    initial_s: float = 0.1
    max_s: float = 2.0
    multiplier: float = 2.0

    def __post_init__(self):
        if not isinstance(self.attempts, int) or self.attempts < 1:
            raise InvalidArgument(f"Retry.attempts must be an integer >= 1, not {self.attempts!r}", field="retry")
        if not 0 <= self.initial_s <= self.max_s or self.multiplier < 1:
            raise InvalidArgument("Retry needs 0 <= initial_s <= max_s and multiplier >= 1", field="retry")

    def wait(self, attempt: int, draw: float) -> float:
        """The wait after the failed try number ``attempt`` (0-based), ``draw`` in [0, 1). Pure."""
        return min(self.max_s, self.initial_s * self.multiplier ** attempt) * (0.5 + draw / 2)


NO_RETRY = Retry(attempts=1)


def checked_timeout(timeout: object) -> float:
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise InvalidArgument(f"timeout is seconds > 0, not {timeout!r}", field="timeout")
    return float(timeout)


class Attempts:
    """The tries of one call: the time each may take, and what to do when one failed."""

    def __init__(self, retry: Retry, timeout: float, idempotent: bool, clock=time.monotonic, draw=random.random):
        checked_timeout(timeout)
        self.retry = retry if idempotent else NO_RETRY
        self.clock, self.draw = clock, draw
        self.deadline = clock() + timeout
        self.tried = 0

    def remaining(self) -> float:
        """The deadline left for the next try."""
        return max(self.deadline - self.clock(), 0.001)

    def wait_after(self, exc: grpc.RpcError) -> float:
        """Seconds to wait before trying again, or the call's exception raised (see module doc)."""
        self.tried += 1
        if exc.code() == grpc.StatusCode.UNAVAILABLE and self.tried < self.retry.attempts:
            wait = self.retry.wait(self.tried - 1, self.draw())
            if self.clock() + wait < self.deadline:
                return wait
        raise error_of(exc) from None
