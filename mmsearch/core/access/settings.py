"""The access settings web and serving share (flat ``MMSEARCH_*`` variables)."""
from __future__ import annotations

from pathlib import Path

from pydantic import field_validator

from mmsearch.core.access.policy import anonymous_principal
from mmsearch.core.access.keys import Principal
from mmsearch.core.access.ratelimit import Network, parse_networks
from mmsearch.core.settings import Group, setting


class Access(Group):
    """API keys and anonymous access."""

    api_keys_file: Path | None = setting(
        None, env="API_KEYS_FILE",
        description="Key file (one JSON line per key, as `mmsearch keys create` prints it; only hashes) - a "
                    "mounted Secret; re-read when it changes. Unset: no keys.")
    anonymous_scenes: str = setting(
        "", env="ANONYMOUS_SCENES",
        description="Scenes callers without a key may search and send feedback on (comma-separated; * for "
                    "every scene). Empty: anonymous access is off and every call needs a key.")

    @field_validator("anonymous_scenes")
    @classmethod
    def _scenes(cls, value: str) -> str:
        anonymous_principal(value)
        return value

    @property
    def anonymous(self) -> Principal | None:
        return anonymous_principal(self.anonymous_scenes)


class ClientAddress(Group):
    """How the web service tells the client's address (the key of per-client limits)."""

    trusted_proxies: str = setting(
        "", env="TRUSTED_PROXIES",
        description="Proxies (IP addresses or CIDR networks, comma-separated) whose forwarding header is "
                    "believed; empty: the header is ignored and the peer address is the client.")
    client_ip_header: str = setting(
        "X-Forwarded-For", env="CLIENT_IP_HEADER",
        description="Forwarding header read (from the right, skipping trusted proxies) when the peer is a "
                    "trusted proxy.")

    @field_validator("trusted_proxies")
    @classmethod
    def _networks(cls, value: str) -> str:
        parse_networks(value)
        return value

    @property
    def networks(self) -> tuple[Network, ...]:
        return parse_networks(self.trusted_proxies)
