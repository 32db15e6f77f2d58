"""Artifact URIs: a local folder (a path or ``file://``) or S3 (``s3://bucket/prefix``).

The embedded default is a local folder; on a cluster, S3 or MinIO (set
``MMSEARCH_S3_ENDPOINT_URL`` for MinIO, credentials from the standard AWS
variables). ``materialize`` gives a local path for reading either kind.
Both variables are :class:`ArtifactSettings`, read by every process that reads
or writes artifacts (preprocess, serving, the jobs).
"""
from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import shutil
from pathlib import Path
from urllib.parse import urlparse

from mmsearch.core.errors import MmsearchError
from mmsearch.core.settings import BaseConfig, load_settings, setting


class ArtifactSettings(BaseConfig):
    """Where S3 artifacts come from and where their local copies are kept."""

    s3_endpoint_url: str = setting("", description="S3 endpoint (MinIO, moto); empty: the default AWS endpoint. "
                                                   "Credentials come from the standard AWS_* variables.")
    cache_dir: Path = setting(default_factory=lambda: Path.home() / ".cache" / "mmsearch", shown_default="~/.cache/mmsearch",
                              description="Folder of the local copies of S3 artifacts.")


def artifact_settings() -> ArtifactSettings:
    """The artifact settings from the environment now (tests and processes may change it between calls)."""
    return load_settings(ArtifactSettings)


class ArtifactError(MmsearchError, ValueError):
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
    """boto3 S3 client; endpoint from MMSEARCH_S3_ENDPOINT_URL (MinIO, moto), short connect timeout."""
    import boto3
    from botocore.config import Config

    config = Config(connect_timeout=10, read_timeout=120, retries={"max_attempts": 3, "mode": "standard"})
    return boto3.client("s3", endpoint_url=artifact_settings().s3_endpoint_url or None, config=config)


def cache_root() -> Path:
    return artifact_settings().cache_dir


def materialize(uri: str | os.PathLike, cache_dir: Path | None = None) -> Path:
    """A local folder/file holding the artifact at ``uri`` (S3 prefixes are downloaded once)."""
    if not is_s3(str(uri)):
        path = local_path(uri)
        if not path.exists():
            raise ArtifactError(f"artifact not found: {path}")
        return path
    bucket, prefix = split_s3(str(uri))
    target = (cache_dir or cache_root()) / "s3" / bucket / hashlib.sha256(prefix.encode()).hexdigest()[:16]

    def download() -> bool:
        client = s3_client()
        found = False
        for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
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
        return found

    if not _s3_call(str(uri), download):  # no credentials, no endpoint, no bucket: one clear ArtifactError
        raise ArtifactError(f"artifact not found: {uri} (no objects under that prefix)")
    return target


# ---------------------------------------------------------------------------
# Reading and writing single objects and whole folders (one way for every stage).
#
# Decisions:
# - ``write_bytes`` is atomic on both kinds: a local file is written beside its
#   target and renamed into place; an S3 PUT is atomic by nature. A reader never
#   sees half an object, so stages can use "the file exists" as "the work is done".
# - Uploads are verified: every PUT / part carries Content-MD5 (S3 rejects a
#   corrupted body), and the final ETag is compared with the one computed
#   locally (MD5 for one part, MD5-of-part-MD5s plus "-N" for multipart).
# - ``publish_tree`` makes a folder appear complete or not at all: locally by
#   renaming a finished sibling folder into place; on S3 by deleting the
#   completion marker first and uploading it last (readers treat a model folder
#   without ``manifest.json`` as not published).
# ---------------------------------------------------------------------------

PART_SIZE = 16 * 1024 * 1024
"""Files larger than this are uploaded in parts of this size (S3 needs parts >= 5 MiB except the last)."""


def join(uri: str | os.PathLike, *parts: str) -> str:
    """``join("s3://b/p", "a", "x.json")`` -> ``s3://b/p/a/x.json``; local paths join as paths."""
    text = str(uri)
    if is_s3(text):
        return "/".join([text.rstrip("/"), *(p.strip("/") for p in parts)])
    return str(local_path(text).joinpath(*parts))


def _s3_call(uri: str, fn, *args, **kwargs):
    """Run a boto3 call, turning connection/credential/bucket errors into one clear ArtifactError."""
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return fn(*args, **kwargs)
    except ClientError as exc:
        err = exc.response.get("Error", {})
        if err.get("Code") in ("NoSuchKey", "404", "NotFound"):
            raise ArtifactError(f"artifact not found: {uri}") from None
        if err.get("Code") == "NoSuchBucket":
            raise ArtifactError(f"S3 bucket does not exist: {uri} (create it or fix the URI)") from None
        raise ArtifactError(f"S3 error on {uri}: {err.get('Code')} {err.get('Message') or ''}".strip()) from None
    except BotoCoreError as exc:
        endpoint = artifact_settings().s3_endpoint_url or "the default AWS endpoint"
        raise ArtifactError(f"cannot reach S3 for {uri} at {endpoint}: {exc} "
                            "(check MMSEARCH_S3_ENDPOINT_URL and AWS_* credentials)") from None


# What to do about a local file-system error, by errno (the message names the path at fault).
_OS_HINTS = {
    errno.EACCES: "check the permissions of that folder (the stage and service pods run as uid 10001)",
    errno.EPERM: "check the permissions of that folder (the stage and service pods run as uid 10001)",
    errno.EROFS: "that file system is read-only: use a path on a writable volume, or an s3:// URI",
    errno.ENOSPC: "the disk is full: free space or use a larger volume",
    errno.EDQUOT: "the disk quota is used up: free space or use a larger volume",
    errno.ENOTDIR: "a file stands where a folder is needed: remove it or choose another path",
    errno.EEXIST: "a file stands where a folder is needed: remove it or choose another path",
    errno.ENOENT: "it does not exist: check the path (and that the step writing it ran)",
}


@contextlib.contextmanager
def _local_io(action: str):
    """Turn an OSError of local file work into an ArtifactError: ``cannot <action>``, the error, the
    path at fault and what to do about it."""
    try:
        yield
    except shutil.Error as exc:  # copytree: one (source, target, why) per file it could not copy
        source, _, why = exc.args[0][0]
        raise ArtifactError(f"cannot {action}: cannot copy {source} ({why}); a broken link or an unreadable "
                            "file in the source: fix or remove it") from None
    except OSError as exc:
        hint = _OS_HINTS.get(exc.errno, "check that path and its folder")
        where = f" ({exc.filename})" if exc.filename else ""
        raise ArtifactError(f"cannot {action}: {exc.strerror or exc}{where}; {hint}") from None


def write_bytes(uri: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``uri`` atomically (parent folders are created locally)."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        _put_verified(s3_client(), bucket, key, data, text)
        return
    path = local_path(text)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with _local_io(f"write {path}"):  # a parent that is a file, no permission, a full disk
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)


def read_bytes(uri: str | os.PathLike) -> bytes:
    """The content of one file (a path, ``file://`` or ``s3://bucket/key``); ArtifactError if missing."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        client = s3_client()
        return _s3_call(text, lambda: client.get_object(Bucket=bucket, Key=key)["Body"].read())
    path = local_path(text)
    if not path.is_file():
        raise ArtifactError(f"artifact not found: {path}")
    return path.read_bytes()


def exists(uri: str | os.PathLike) -> bool:
    """Whether a file/object exists at ``uri`` (an S3 "folder" counts when any key is under it)."""
    text = str(uri)
    if not is_s3(text):
        return local_path(text).exists()
    bucket, key = split_s3(text)
    client = s3_client()
    resp = _s3_call(text, client.list_objects_v2, Bucket=bucket, Prefix=key, MaxKeys=2)
    return any(obj["Key"] == key or obj["Key"].startswith(key.rstrip("/") + "/") for obj in resp.get("Contents", []))


def list_files(uri: str | os.PathLike) -> list[str]:
    """Sorted relative paths (``/``-separated) of every file under the folder/prefix ``uri``; [] if none."""
    text = str(uri)
    if not is_s3(text):
        root = local_path(text)
        if not root.is_dir():
            return []
        return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    bucket, prefix = split_s3(text)
    prefix = prefix.rstrip("/") + "/" if prefix else ""
    client = s3_client()
    out: list[str] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
    for page in _s3_call(text, list, pages):
        out.extend(obj["Key"][len(prefix):] for obj in page.get("Contents", []))
    return sorted(out)


def delete(uri: str | os.PathLike) -> None:
    """Remove the file/object at ``uri`` (no error when it is already gone)."""
    text = str(uri)
    if is_s3(text):
        bucket, key = split_s3(text)
        _s3_call(text, s3_client().delete_object, Bucket=bucket, Key=key)
        return
    local_path(text).unlink(missing_ok=True)


def file_sha256(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _md5_b64(data: bytes) -> tuple[bytes, str]:
    import base64

    raw = hashlib.md5(data).digest()
    return raw, base64.b64encode(raw).decode()


def _put_verified(client, bucket: str, key: str, data: bytes, uri: str) -> None:
    raw, b64 = _md5_b64(data)
    resp = _s3_call(uri, client.put_object, Bucket=bucket, Key=key, Body=data, ContentMD5=b64)
    etag = resp.get("ETag", "").strip('"')
    if etag and etag != raw.hex():
        raise ArtifactError(f"checksum mismatch after uploading {uri}: ETag {etag} != MD5 {raw.hex()}")


def upload_file(path: str | os.PathLike, uri: str, *, part_size: int = PART_SIZE) -> None:
    """Upload one local file to ``s3://`` (multipart above ``part_size`` bytes), verified by MD5/ETag."""
    bucket, key = split_s3(uri)
    client = s3_client()
    size = os.path.getsize(path)
    if size <= part_size:
        _put_verified(client, bucket, key, Path(path).read_bytes(), uri)
        return
    upload_id = _s3_call(uri, client.create_multipart_upload, Bucket=bucket, Key=key)["UploadId"]
    try:
        parts, digests = [], []
        with open(path, "rb") as fh:
            for number, block in enumerate(iter(lambda: fh.read(part_size), b""), start=1):
                raw, b64 = _md5_b64(block)
                digests.append(raw)
                resp = _s3_call(uri, client.upload_part, Bucket=bucket, Key=key, UploadId=upload_id,
                                PartNumber=number, Body=block, ContentMD5=b64)
                parts.append({"PartNumber": number, "ETag": resp["ETag"]})
        resp = _s3_call(uri, client.complete_multipart_upload, Bucket=bucket, Key=key, UploadId=upload_id,
                        MultipartUpload={"Parts": parts})
    except BaseException:
        try:
            client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload_id)
        finally:
            raise
    expected = f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"
    etag = resp.get("ETag", "").strip('"')
    if etag != expected:
        raise ArtifactError(f"checksum mismatch after multipart upload of {uri}: ETag {etag} != {expected}")


def upload_tree(local_dir: str | os.PathLike, uri: str | os.PathLike, *, last: tuple[str, ...] = (),
                part_size: int = PART_SIZE) -> list[str]:
    """Copy every file under ``local_dir`` to the folder/prefix ``uri``; files named in ``last`` go last.

    Returns the relative paths written. Local targets are written file by file
    (each atomically); use :func:`publish_tree` when the folder must appear whole.
    """
    root = Path(local_dir)
    if not root.is_dir():
        raise ArtifactError(f"cannot upload {root} to {uri}: {root} is not a folder; "
                            f"{_OS_HINTS[errno.ENOENT]}")
    with _local_io(f"upload {root} to {uri}"):
        rels = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
        rels = [r for r in rels if r not in last] + [r for r in rels if r in last]
        for rel in rels:
            target = join(uri, rel)
            if is_s3(str(uri)):
                upload_file(root / rel, target, part_size=part_size)
            else:
                dest = local_path(target)
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
                shutil.copyfile(root / rel, tmp)
                os.replace(tmp, dest)
    return rels


def publish_tree(local_dir: str | os.PathLike, uri: str | os.PathLike, *, marker: str = "manifest.json",
                 part_size: int = PART_SIZE) -> None:
    """Replace the folder at ``uri`` with ``local_dir`` so readers see the old one, nothing, or the new one.

    Local: copy into a hidden sibling, then swap it in with renames. S3: delete
    ``marker`` first, upload everything else, delete keys the new tree lacks,
    upload ``marker`` last — a folder whose marker is missing is incomplete.
    """
    import uuid

    text = str(uri)
    if is_s3(text):
        delete(join(text, marker))
        written = set(upload_tree(local_dir, text, last=(marker,), part_size=part_size))
        for rel in list_files(text):
            if rel not in written:
                delete(join(text, rel))
        return
    dest = local_path(text)
    token = uuid.uuid4().hex[:8]
    staging = dest.with_name(f".{dest.name}.staging-{token}")
    old = dest.with_name(f".{dest.name}.old-{token}")
    if not Path(local_dir).is_dir():
        raise ArtifactError(f"cannot publish {local_dir} to {dest}: {local_dir} is not a folder; "
                            f"{_OS_HINTS[errno.ENOENT]}")
    try:
        with _local_io(f"publish {local_dir} to {dest}"):
            dest.parent.mkdir(parents=True, exist_ok=True)
            shutil.copytree(local_dir, staging)
            if dest.exists():
                os.replace(dest, old)
            try:
                os.replace(staging, dest)
            except OSError:
                if old.exists():
                    os.replace(old, dest)  # readers keep the old folder
                raise
    finally:  # a half-copied staging folder never stays behind (the old folder is back or replaced)
        shutil.rmtree(staging, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)
