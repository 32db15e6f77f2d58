"""Test certificates made with ``cryptography``: a CA, leaves signed by it, expired ones, and the files
cert-manager mounts (``tls.crt``, ``tls.key``, ``ca.crt``).

``Ca.make("test")`` is a self-signed CA; ``ca.leaf()`` a certificate for 127.0.0.1 and localhost (server
and client use); ``ca.leaf(expired=True)`` one whose validity ended yesterday. :func:`write_pair` writes a
leaf into a folder the way a mounted Secret looks, :func:`swap_pair` rotates it as the kubelet does (all
three files at once), :func:`half_write` leaves a key that does not match the certificate.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = dt.timedelta(days=1)


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


@dataclass(frozen=True)
class Leaf:
    cert: bytes   # PEM
    key: bytes    # PEM (PKCS#8)
    ca: bytes     # PEM of the CA that signed it


@dataclass(frozen=True)
class Ca:
    name: str
    key: ec.EllipticCurvePrivateKey
    certificate: x509.Certificate

    @classmethod
    def make(cls, name: str) -> "Ca":
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        cert = (x509.CertificateBuilder().subject_name(_name(name)).issuer_name(_name(name))
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - _DAY).not_valid_after(now + 30 * _DAY)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                             content_commitment=False, key_encipherment=False,
                                             data_encipherment=False, key_agreement=False,
                                             encipher_only=False, decipher_only=False), critical=True)
                .sign(key, hashes.SHA256()))
        return cls(name, key, cert)

    @property
    def pem(self) -> bytes:
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def leaf(self, common: str = "localhost", *, expired: bool = False) -> Leaf:
        """A certificate for 127.0.0.1 and localhost, good for a server and a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.timezone.utc)
        start, end = (now - 3 * _DAY, now - _DAY) if expired else (now - _DAY, now + 30 * _DAY)
        cert = (x509.CertificateBuilder().subject_name(_name(common)).issuer_name(self.certificate.subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(start).not_valid_after(end)
                .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                            x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                               critical=False)
                .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH,
                                                      ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
                .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
                .sign(self.key, hashes.SHA256()))
        return Leaf(cert.public_bytes(serialization.Encoding.PEM), _pem_key(key), self.pem)


@dataclass(frozen=True)
class Files:
    """The three files of a mounted cert-manager Secret."""

    folder: Path

    @property
    def cert(self) -> Path:
        return self.folder / "tls.crt"

    @property
    def key(self) -> Path:
        return self.folder / "tls.key"

    @property
    def ca(self) -> Path:
        return self.folder / "ca.crt"

    def settings(self, *, client_auth: bool = False, server: bool = True) -> dict:
        """The ``Tls`` settings that use these files (``server=False``: the CA only, no certificate)."""
        own = {"cert_file": self.cert, "key_file": self.key} if server else {}
        return {**own, "ca_file": self.ca, "client_auth": client_auth}


def _replace(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def write_pair(folder: Path, leaf: Leaf, *, ca: bytes | None = None) -> Files:
    """``tls.crt``, ``tls.key`` and ``ca.crt`` laid out as the kubelet mounts a Secret (each a link into
    ``..data``, itself a link to a version folder); ``ca``: the bundle to trust (default the leaf's CA)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = Files(folder)
    swap_pair(files, leaf, ca=ca)
    for name in ("tls.crt", "tls.key", "ca.crt"):
        if not (folder / name).is_symlink():
            (folder / name).symlink_to(f"..data/{name}")
    return files


def swap_pair(files: Files, leaf: Leaf, *, ca: bytes | None = None) -> None:
    """Rotate as the kubelet does: the three files in a new version folder, then ``..data`` swapped to it
    by one rename, so a reader sees the old set or the new one."""
    version = files.folder / f"..v{len(list(files.folder.glob('..v*'))):04d}"
    version.mkdir()
    for name, data in (("tls.crt", leaf.cert), ("tls.key", leaf.key), ("ca.crt", leaf.ca if ca is None else ca)):
        (version / name).write_bytes(data)
    link = files.folder / "..data_tmp"
    link.symlink_to(version.name)
    os.replace(link, files.folder / "..data")


def half_write(files: Files, leaf: Leaf) -> None:
    """A rotation caught half-way: the new key beside the old certificate (one file rewritten in place)."""
    _replace(files.folder / "..data" / "tls.key", leaf.key)
