"""Fetching an image URL for a live write, without server-side request forgery.

Decisions:
- ``http`` and ``https`` only; a URL with credentials is refused.
- The host is resolved once and every address it resolves to must be public
  (:func:`public_address`: not private, loopback, link-local, multicast,
  reserved or unspecified); the connection then goes to that checked
  address (the TLS name check still uses the host name), so a DNS answer
  that changes between the check and the connection (rebinding) cannot
  redirect it. ``MMSEARCH_WRITER_ALLOW_PRIVATE_URLS`` lifts the address check
  (tests, a laptop demo).
- Redirects are not followed (a redirect is how a public URL points inside):
  a 3xx is refused naming it.
- At most ``max_bytes`` are read (the query image limit,
  ``MMSEARCH_MAX_IMAGE_BYTES``), within ``timeout`` seconds.
"""
from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
from urllib.parse import urlsplit


class FetchRefused(ValueError):
    """A URL the writer will not fetch, or a fetch that failed; the message says which and why."""


def public_address(address: str) -> bool:
    """Whether ``address`` (IPv4 or IPv6) is a public one. Pure."""
    ip = ipaddress.ip_address(address.split("%")[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


def check_url(url: str) -> tuple[str, str, int, str]:
    """(scheme, host, port, path with query) of an acceptable URL; FetchRefused naming the problem. Pure."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise FetchRefused(f"not a valid URL ({exc})") from None
    if parts.scheme not in ("http", "https"):
        raise FetchRefused(f"scheme {parts.scheme or '(none)'!r} is not fetched: give an http:// or https:// URL, "
                           "or send the image bytes")
    if parts.username or parts.password:
        raise FetchRefused("a URL with credentials is not fetched")
    if not parts.hostname:
        raise FetchRefused("the URL names no host")
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80), path


def resolve(host: str, port: int, allow_private: bool) -> str:
    """The address to connect to; FetchRefused when any address of ``host`` is not public."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as exc:
        raise FetchRefused(f"host {host!r} does not resolve ({exc.strerror})") from None
    addresses = [info[4][0] for info in infos]
    if not allow_private:
        inside = [a for a in addresses if not public_address(a)]
        if inside:
            raise FetchRefused(f"host {host!r} resolves to {inside[0]}, a private, loopback or reserved address: "
                               "the writer fetches public URLs only; send the image bytes instead")
    return addresses[0]


class _Pinned(http.client.HTTPSConnection):
    """HTTPS to a checked address, with the host name for SNI and the certificate check."""

    def __init__(self, address: str, host: str, port: int, timeout: float):
        super().__init__(host, port, timeout=timeout, context=ssl.create_default_context())
        self._address = address

    def connect(self) -> None:
        sock = socket.create_connection((self._address, self.port), self.timeout)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)


def fetch(url: str, *, max_bytes: int, timeout: float, allow_private: bool = False) -> bytes:
    """The bytes at ``url`` (see the module doc); FetchRefused saying why not. Blocking."""
    scheme, host, port, path = check_url(url)
    address = resolve(host, port, allow_private)
    if scheme == "https":
        conn: http.client.HTTPConnection = _Pinned(address, host, port, timeout)
    else:
        conn = http.client.HTTPConnection(address, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": host if port in (80, 443) else f"{host}:{port}",
                                           "User-Agent": "mmsearch-writer", "Accept": "image/*"})
        response = conn.getresponse()
        if 300 <= response.status < 400:
            raise FetchRefused(f"answered {response.status} (a redirect): redirects are not followed; give the "
                               "final URL")
        if response.status != 200:
            raise FetchRefused(f"answered HTTP {response.status}")
        declared = response.getheader("Content-Length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchRefused(f"is {declared} bytes, over the limit of {max_bytes} (MMSEARCH_MAX_IMAGE_BYTES)")
        data = response.read(max_bytes + 1)
        if len(data) > max_bytes:
            raise FetchRefused(f"is over the limit of {max_bytes} bytes (MMSEARCH_MAX_IMAGE_BYTES)")
        return data
    except (OSError, http.client.HTTPException) as exc:
        raise FetchRefused(f"cannot be fetched ({type(exc).__name__}: {exc})") from None
    finally:
        conn.close()
