"""publish on Milvus Lite: the alias switch, the completeness gate, pruning to --keep versions,
scene isolation, resolve/read_manifest through the alias, the alias history and --rollback, CLI errors.
(The quality gate with real evaluations: tests/serving/test_lifecycle.py; native aliases:
tests/serving/test_native_alias.py.)"""
from __future__ import annotations

import subprocess
import sys

import pytest

from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.names import REGISTRY
from mmsearch.core.milvus.record import read_manifest
from mmsearch.core.milvus.registry import alias_history, read_state, resolve_alias, resolve_collection, rollback_choice
from mmsearch.core.errors import MmsearchError
from mmsearch.jobs.publish import publish, versions_to_drop
from mmsearch.jobs.push_milvus import push_vectors
from tests.jobs.milvus_data import corpus_of, vectors, write_manifest


def push(lite, manifest, scene, version, n=20):
    ids, vecs = vectors(n, manifest.dimension, seed=hash((scene, version)) % 1000)
    push_vectors(lite, scene, version, manifest, [(ids, vecs)], n, corpus_of(ids))


def test_versions_to_drop_keeps_the_newest_and_the_published():
    cols = [{"name": f"s_{v}"} for v in (1, 2, 3, 4)]
    assert versions_to_drop(cols, "s_4", 2) == ["s_1", "s_2"]
    assert versions_to_drop(cols, "s_2", 2) == ["s_1"]  # a rollback keeps the newest 2 and the published
    assert versions_to_drop(cols, "s_4", 1) == ["s_1", "s_2", "s_3"]
    assert versions_to_drop(cols, "s_4", 10) == []
    # the version the alias moved away from stays: serving searches it until it follows, and rollback returns to it
    assert versions_to_drop(cols, "s_4", 2, previous="s_1") == ["s_2"]
    assert versions_to_drop(cols, "s_4", 1, previous="s_3") == ["s_1", "s_2"]


def test_alias_switch_prune_and_scene_isolation(tmp_path):
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path, "m", 8)
    for version in ("1", "2", "3"):
        push(lite, manifest, "docs", version)
    push(lite, manifest, "docs_b", "1")  # another scene whose names start with "docs_"

    first = publish(lite, "docs", "1", keep=2)
    assert first == {"alias": "docs", "collection": "docs_1", "previous": None, "dropped": [], "forced": False,
                     "documents": 20}
    second = publish(lite, "docs", "3", keep=2)  # docs_1 stays: serving searches it until it follows the move
    assert second["previous"] == "docs_1" and second["dropped"] == []

    client = connect(lite)
    try:
        assert sorted(client.list_collections()) == ["docs_1", "docs_2", "docs_3", "docs_b_1", REGISTRY]
        assert resolve_collection(client, "docs") == "docs_3"
        assert read_manifest(client, "docs")["collection"] == "docs_3"
        assert resolve_collection(client, "docs_2") == "docs_2"  # a plain collection name
        with pytest.raises(MmsearchError, match="no collection or alias named 'nothing'"):
            resolve_collection(client, "nothing")
    finally:
        close(client, lite)

    third = publish(lite, "docs", "2", keep=1)  # roll back: the newest (docs_3, also the previous) and the published stay
    assert third["previous"] == "docs_3" and third["dropped"] == ["docs_1"]
    push(lite, manifest, "docs", "4")
    fourth = publish(lite, "docs", "4", keep=1)
    assert fourth["previous"] == "docs_2" and fourth["dropped"] == ["docs_3"]


def test_rollback_goes_back_through_the_kept_versions_and_stops_at_the_first_dropped(tmp_path):
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path, "m", 8)
    for version in ("1", "2", "3"):
        push(lite, manifest, "docs", version)
        publish(lite, "docs", version, keep=2)  # publishing 3 drops docs_1
    back = publish(lite, "docs", rollback=True)
    assert (back["collection"], back["previous"], back["rollback"]) == ("docs_2", "docs_3", True)
    assert back["documents"] == 20  # what the operator shows as the alias's documents
    client = connect(lite)
    try:
        assert resolve_alias(client, "docs") == "docs_2"
        assert alias_history(client, "docs") == ["docs_1"]  # docs_2 left the history
        assert read_state(client, "docs_2")["published"]["rollback_from"] == "docs_3"
    finally:
        close(client, lite)
    with pytest.raises(MmsearchError, match="cannot roll back scene docs: no previous version is kept .*docs_1"):
        publish(lite, "docs", rollback=True)
    with pytest.raises(MmsearchError, match="scene nothing has no published version to roll back from"):
        publish(lite, "nothing", rollback=True)


def test_rollback_choice_is_pure():
    kept = {"b", "d"}.__contains__
    assert rollback_choice(["a", "b", "c", "d"], kept) == ("b", ["c", "d"])
    assert rollback_choice(["a", "c"], kept) == (None, [])


def test_an_incomplete_or_missing_collection_is_not_published(tmp_path):
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path, "m", 8)
    ids, vecs = vectors(30, 8)
    with pytest.raises(MmsearchError, match="read 30 vectors, expected 40"):
        push_vectors(lite, "docs", "1", manifest, [(ids, vecs)], 40, corpus_of(ids))  # the job dies before marking it complete
    with pytest.raises(MmsearchError, match="collection docs_1 is not complete"):
        publish(lite, "docs", "1")
    with pytest.raises(MmsearchError, match="collection docs_9 does not exist"):
        publish(lite, "docs", "9")
    with pytest.raises(MmsearchError, match="--keep 0"):
        publish(lite, "docs", "1", keep=0)


@pytest.mark.parametrize("args, expected", [
    (["--version", "7"], "error: collection s_7 does not exist"),
    (["--milvus-uri", "http://127.0.0.1:9", "--timeout", "1"], "error: cannot reach Milvus at http://127.0.0.1:9"),
    (["--scene", "9lives"], "error: --scene '9lives'"),
])
def test_cli_bad_input_exits_non_zero_with_one_line(tmp_path, args, expected):
    opts = ["--milvus-uri", str(tmp_path / "m.db"), "--scene", "s", "--version", "1"]
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "publish", *opts, *args],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_status_names_what_is_live_and_refuses_an_unknown_scene(tmp_path):
    lite = str(tmp_path / "milvus.db")
    manifest = write_manifest(tmp_path, "m", 8)
    push(lite, manifest, "docs", "1")
    publish(lite, "docs", "1")
    from mmsearch.jobs.status import scene_status

    status = scene_status(lite, "docs")
    assert status["live"]["collection"] == "docs_1" and status["live"]["documents"] == 20
    assert status["live"]["model"] == "m" and status["live"]["published"]["forced"] is False
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "status", "--milvus-uri", lite,
                             "--scene", "nothing"], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and lines == [f"error: scene nothing has no collections in {lite}"]


def test_the_cli_writes_its_outcome_to_the_summary_file(tmp_path):
    """The operator reads publish's outcome from the pod's termination message (--summary-file)."""
    import json

    from typer.testing import CliRunner

    from mmsearch.jobs.cli import job_app as app

    lite = str(tmp_path / "milvus.db")
    push(lite, write_manifest(tmp_path, "m", 8), "docs", "1")
    out = tmp_path / "termination-log"
    result = CliRunner().invoke(app, ["publish", "--milvus-uri", lite, "--scene", "docs", "--version", "1",
                                      "--summary-file", str(out)])
    assert result.exit_code == 0, result.output
    assert json.loads(out.read_text()) | {"dropped": None} == {
        "alias": "docs", "collection": "docs_1", "previous": None, "dropped": None, "forced": False, "documents": 20}
    result = CliRunner().invoke(app, ["publish", "--milvus-uri", lite, "--scene", "docs", "--version", "1",
                                      "--summary-file", str(tmp_path / "missing" / "log")])
    assert result.exit_code == 1 and "does not exist" in result.output
