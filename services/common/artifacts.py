"""Artifact URIs: a local folder (a path or ``file://``) or S3 (``s3://bucket/prefix``).

The embedded default is a local folder; on a cluster, S3 or MinIO (set
``MMSEARCH_S3_ENDPOINT_URL`` for MinIO, credentials from the standard AWS
variables). ``materialize`` gives a local path for reading either kind.
"""
from __future__ import annotations

import hashlib
import os
from pathlib import Path
from urllib.parse import urlparse


class ArtifactError(ValueError):
    """An artifact URI that is malformed or cannot be read."""


def is_s3(uri: str) -> bool:
    return str(uri).startswith("s3://")


def split_s3(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b`` -> (``bucket``, ``a/b``)."""
    parsed = urlparse(uri)
    if parsed.scheme != "s3" or not parsed.netloc:
        raise ArtifactError(f"not an S3 URI: {uri!r} (expected s3://bucket/prefix)")
    return parsed.netloc, parsed.path.lstrip("/")


def local_path(uri: str | os.PathLike) -> Path:
    """A local path for a plain path or a ``file://`` URI."""
    text = str(uri)
    if text.startswith("file://"):
        return Path(urlparse(text).path)
    if "://" in text:
        raise ArtifactError(f"unsupported artifact URI scheme in {text!r}: use a path, file:// or s3://")
    return Path(text)


def s3_client():
    import boto3

    return boto3.client("s3", endpoint_url=os.environ.get("MMSEARCH_S3_ENDPOINT_URL") or None)


def cache_root() -> Path:
    return Path(os.environ.get("MMSEARCH_CACHE_DIR", Path.home() / ".cache" / "mmsearch"))


def materialize(uri: str | os.PathLike, cache_dir: Path | None = None) -> Path:
    """A local folder/file holding the artifact at ``uri`` (S3 prefixes are downloaded once)."""
    if not is_s3(str(uri)):
        path = local_path(uri)
        if not path.exists():
            raise ArtifactError(f"artifact not found: {path}")
        return path
    bucket, prefix = split_s3(str(uri))
    target = (cache_dir or cache_root()) / "s3" / bucket / hashlib.sha256(prefix.encode()).hexdigest()[:16]
    client = s3_client()
    paginator = client.get_paginator("list_objects_v2")
    found = False
    for page in paginator.paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            found = True
            rel = obj["Key"][len(prefix):].lstrip("/") or Path(obj["Key"]).name
            dest = target / rel
            if dest.exists() and dest.stat().st_size == obj["Size"]:
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(dest.suffix + ".part")
            client.download_file(bucket, obj["Key"], str(tmp))
            tmp.replace(dest)
    if not found:
        raise ArtifactError(f"artifact not found: {uri} (no objects under that prefix)")
    return target


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The content of one file (a path, ``file://`` or ``s3://bucket/key``); ArtifactError if missing."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        client = s3_client()
        try:
            return client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except client.exceptions.NoSuchKey:
            raise ArtifactError(f"artifact not found: {text}") from None
    path = local_path(text)
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    return path.read_bytes()


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write one file; local files atomically (temp file + rename), parents created."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        s3_client().put_object(Bucket=bucket, Key=key, Body=data)
        return
    path = local_path(text)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
    tmp.write_bytes(data)
    tmp.replace(path)


def exists(uri: str | os.PathLike) -> bool:
    """True when the file (or, for S3, the exact key) exists."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        client = s3_client()
        try:
            client.head_object(Bucket=bucket, Key=key)
            return True
        except client.exceptions.ClientError:
            return False
    return local_path(text).exists()
