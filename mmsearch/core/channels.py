"""gRPC channel options, one list for every client and server of ours.

``message_options`` sets both message size limits; ``channel_options`` adds
a short reconnect back-off for clients of a dependency that may restart:
gRPC's default back-off grows to 2 minutes, so a client would keep failing
long after the server is back; with these a fresh connection is tried within
a second, and round-robin load balancing: a target that resolves to several
addresses (a headless Service's DNS name, ``ipv4:a:p,b:p``) spreads calls
over every replica instead of pinning one connection to one pod.
"""
from __future__ import annotations

DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024


def message_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int]]:
    return [("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes)]


def channel_options(max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES) -> list[tuple[str, int | str]]:
    """Options of a client channel (see module doc)."""
    return [*message_options(max_message_bytes),
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 1000),
            ("grpc.lb_policy_name", "round_robin")]
