"""mmsearch.core.artifacts against a local folder and a real S3 endpoint (moto server over HTTP)."""
from __future__ import annotations

import os
import socket
import uuid

import pytest

from mmsearch.core import artifacts
from mmsearch.core.artifacts import ArtifactError


@pytest.fixture()
def unused_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture()
def bucket_uri(s3_server) -> str:
    """A fresh bucket on the session's moto server (MMSEARCH_S3_ENDPOINT_URL points at it)."""
    name = f"b-{uuid.uuid4().hex[:12]}"
    artifacts.s3_client().create_bucket(Bucket=name)
    return f"s3://{name}/some/prefix"


def _tree(root, big: bytes) -> dict[str, bytes]:
    files = {"config.pbtxt": b'name: "m"\n', "1/model.onnx": big, "manifest.json": b"{}", "sub/dir/x.bin": os.urandom(10)}
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    return files


def test_local_write_read_list_exists(tmp_path):
    uri = artifacts.join(tmp_path, "a", "b.bin")
    artifacts.write_bytes(uri, b"xyz")
    assert artifacts.read_bytes(uri) == b"xyz"
    assert artifacts.exists(uri) and artifacts.exists(tmp_path / "a")
    assert artifacts.list_files(tmp_path) == ["a/b.bin"]  # no temp files left behind
    artifacts.delete(uri)
    assert not artifacts.exists(uri)
    with pytest.raises(ArtifactError, match="artifact not found"):
        artifacts.read_bytes(uri)


def test_s3_roundtrip_multipart_byte_identical(tmp_path, bucket_uri):
    big = os.urandom(11 * 1024 * 1024 + 123)  # 3 parts of 5 MiB: exercises multipart + ETag check
    files = _tree(tmp_path / "src", big)
    written = artifacts.upload_tree(tmp_path / "src", bucket_uri, last=("manifest.json",), part_size=5 * 1024 * 1024)
    assert written[-1] == "manifest.json"
    assert artifacts.list_files(bucket_uri) == sorted(files)
    for rel, data in files.items():
        assert artifacts.read_bytes(artifacts.join(bucket_uri, rel)) == data
    head = artifacts.s3_client().head_object(**dict(zip(("Bucket", "Key"), artifacts.split_s3(artifacts.join(bucket_uri, "1/model.onnx")))))
    assert head["ETag"].strip('"').endswith("-3")
    assert artifacts.exists(bucket_uri) and artifacts.exists(artifacts.join(bucket_uri, "sub"))
    assert not artifacts.exists(artifacts.join(bucket_uri, "su"))
    # materialize downloads the prefix to a local folder, byte-identical
    local = artifacts.materialize(bucket_uri, cache_dir=tmp_path / "cache")
    assert (local / "1/model.onnx").read_bytes() == big


def test_s3_publish_tree_replaces_and_drops_stale_keys(tmp_path, bucket_uri):
    _tree(tmp_path / "v1", b"one")
    artifacts.publish_tree(tmp_path / "v1", bucket_uri)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2/manifest.json").write_bytes(b'{"v": 2}')
    (tmp_path / "v2/config.pbtxt").write_bytes(b"two")
    artifacts.publish_tree(tmp_path / "v2", bucket_uri)
    assert artifacts.list_files(bucket_uri) == ["config.pbtxt", "manifest.json"]
    assert artifacts.read_bytes(artifacts.join(bucket_uri, "manifest.json")) == b'{"v": 2}'


def test_local_publish_tree_swaps_whole_folder(tmp_path):
    _tree(tmp_path / "v1", b"one")
    dest = tmp_path / "repo" / "m"
    artifacts.publish_tree(tmp_path / "v1", dest)
    (tmp_path / "v2").mkdir()
    (tmp_path / "v2/manifest.json").write_bytes(b"2")
    artifacts.publish_tree(tmp_path / "v2", dest)
    assert artifacts.list_files(dest) == ["manifest.json"]
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["m"]  # no staging/old folders left


def test_s3_missing_key_and_bucket_are_clear(bucket_uri):
    with pytest.raises(ArtifactError, match="artifact not found"):
        artifacts.read_bytes(artifacts.join(bucket_uri, "nope"))
    with pytest.raises(ArtifactError, match="bucket does not exist"):
        artifacts.read_bytes("s3://no-such-bucket-xyz/k")


def test_s3_unreachable_endpoint_is_clear(monkeypatch, unused_port):
    monkeypatch.setenv("MMSEARCH_S3_ENDPOINT_URL", f"http://127.0.0.1:{unused_port}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(ArtifactError, match="cannot reach S3"):
        artifacts.write_bytes("s3://bucket/x", b"1")


# Local file-system failures are ArtifactErrors naming the path and what to do, never a raw OSError.

def test_publishing_where_a_file_stands_in_the_way_names_it(tmp_path):
    _tree(tmp_path / "v1", b"one")
    (tmp_path / "repo").write_bytes(b"a file, not a folder")
    with pytest.raises(ArtifactError) as err:
        artifacts.publish_tree(tmp_path / "v1", tmp_path / "repo" / "m")
    message = str(err.value)
    assert f"cannot publish {tmp_path / 'v1'} to {tmp_path / 'repo' / 'm'}" in message
    assert str(tmp_path / "repo") in message and "a file stands where a folder is needed" in message


def test_uploading_into_a_file_in_the_way_names_it(tmp_path):
    _tree(tmp_path / "v1", b"one")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "sub").write_bytes(b"in the way of sub/dir/x.bin")
    with pytest.raises(ArtifactError, match=r"cannot upload .*: .*\(.*out/sub.*\); a file stands where a folder"):
        artifacts.upload_tree(tmp_path / "v1", tmp_path / "out")


@pytest.mark.parametrize("call", [artifacts.upload_tree, artifacts.publish_tree], ids=["upload", "publish"])
def test_a_missing_source_folder_is_named(tmp_path, call):
    with pytest.raises(ArtifactError, match=r"is not a folder; it does not exist: check the path"):
        call(tmp_path / "never-written", tmp_path / "dest")
    assert not (tmp_path / "dest").exists()


def test_a_failed_publish_keeps_the_old_folder_and_leaves_no_staging(tmp_path):
    _tree(tmp_path / "v1", b"one")
    dest = tmp_path / "repo" / "m"
    artifacts.publish_tree(tmp_path / "v1", dest)
    _tree(tmp_path / "v2", b"two")
    (tmp_path / "v2" / "dangling").symlink_to(tmp_path / "nowhere")  # copying it fails half-way
    with pytest.raises(ArtifactError, match=f"cannot publish {tmp_path / 'v2'} to {dest}: cannot copy .*dangling"):
        artifacts.publish_tree(tmp_path / "v2", dest)
    assert artifacts.read_bytes(artifacts.join(dest, "1/model.onnx")) == b"one"
    assert sorted(p.name for p in (tmp_path / "repo").iterdir()) == ["m"]
