"""push-milvus on Milvus Lite: collection layout, recorded manifest, batches, reruns, SIGKILL half-way,
refusals (dimension, model, index), and the CLI's one-line errors."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import numpy as np
import pytest

from mmsearch.core.milvus.connection import close, connect
from mmsearch.core.milvus.record import is_complete, read_manifest
from mmsearch.core.milvus.rows import count
from mmsearch.core.milvus.schema import AUTO_INDEX, validate_index
from mmsearch.core.errors import MmsearchError
from mmsearch.jobs.push_milvus import push_vectors
from mmsearch.dev.processes import free_port
from tests.support.jobs import job_killed_after, run_job
from tests.jobs.milvus_data import corpus_of, vectors, write_manifest, write_vectors


def chunks(ids, vecs, size):
    return ((ids[i:i + size], vecs[i:i + size]) for i in range(0, len(ids), size))


def all_present(client, name: str, ids: np.ndarray) -> bool:
    found = set()
    for start in range(0, len(ids), 5000):
        batch = [int(i) for i in ids[start:start + 5000]]
        found.update(row["id"] for row in client.get(name, ids=batch, output_fields=["id"]))
    return found == {int(i) for i in ids}


@pytest.fixture()
def lite(tmp_path):
    return str(tmp_path / "milvus.db")


def test_push_records_the_manifest_and_keeps_the_last_partial_batch(tmp_path, lite):
    manifest = write_manifest(tmp_path, "m", 16)
    ids, vecs = vectors(2345, 16)
    summary = push_vectors(lite, "docs", "1", manifest, chunks(ids, vecs, 700), len(ids), corpus_of(ids),
                           batch_size=1000)
    assert summary["collection"] == "docs_1" and summary["entities"] == 2345 and summary["created"] is True
    client = connect(lite)
    try:
        assert count(client, "docs_1") == 2345 and all_present(client, "docs_1", ids)
        described = client.describe_collection("docs_1")
        fields = {f["name"]: f for f in described["fields"]}
        assert fields["id"]["is_primary"] and fields["vector"]["params"]["dim"] == 16
        recorded = read_manifest(client, "docs_1")
        assert {k: recorded[k] for k in ("name", "onnx_sha256", "dimension", "metric", "towers")} == \
            {k: manifest.to_dict()[k] for k in ("name", "onnx_sha256", "dimension", "metric", "towers")}
        assert recorded["collection"] == "docs_1" and recorded["complete"] is True
        assert recorded["index"] == {"type": "FLAT", "metric": "IP", "params": {}, "chosen": "auto: 2345 rows"}
        hit = client.search("docs_1", data=[vecs[42].tolist()], limit=1, search_params={"metric_type": "IP"})[0][0]
        assert hit["id"] == ids[42] and hit["distance"] == pytest.approx(1.0, abs=1e-5)
    finally:
        close(client, lite)


def test_rerun_is_idempotent_and_refuses_another_model_or_dimension(tmp_path, lite):
    manifest = write_manifest(tmp_path, "m", 8)
    ids, vecs = vectors(300, 8)
    push_vectors(lite, "docs", "1", manifest, chunks(ids, vecs, 300), 300, corpus_of(ids), batch_size=64)
    again = push_vectors(lite, "docs", "1", manifest, chunks(ids, vecs, 300), 300, corpus_of(ids), batch_size=64)
    assert again["created"] is False and again["entities"] == 300
    other = write_manifest(tmp_path, "m2", 8, seed="b")
    with pytest.raises(MmsearchError, match="collection docs_1 was built with model 'm'"):
        push_vectors(lite, "docs", "1", other, chunks(ids, vecs, 300), 300, corpus_of(ids))
    wider = write_manifest(tmp_path, "m3", 12)
    with pytest.raises(MmsearchError, match="dimension mismatch: collection docs_1 holds 8-d vectors, these are 12-d"):
        push_vectors(lite, "docs", "1", wider, chunks(*vectors(5, 12), 5), 5, corpus_of(vectors(5, 12)[0]))
    with pytest.raises(MmsearchError, match="dimension mismatch: the vectors are 8-d"):
        push_vectors(lite, "docs", "2", wider, chunks(ids, vecs, 300), 300, corpus_of(ids))


def test_extra_entities_fail_the_count_check(tmp_path, lite):
    manifest = write_manifest(tmp_path, "m", 8)
    ids, vecs = vectors(50, 8)
    push_vectors(lite, "docs", "1", manifest, chunks(ids, vecs, 50), 50, corpus_of(ids))
    with pytest.raises(MmsearchError, match="holds 50 entities, expected 20; it holds vectors of another corpus"):
        push_vectors(lite, "docs", "1", manifest, chunks(ids[:20], vecs[:20], 20), 20, corpus_of(ids[:20]))


@pytest.mark.parametrize("kwargs, expected", [
    ({"index_type": "HNSW"}, "--index-type HNSW: Milvus Lite .* supports only FLAT, IVF_FLAT, AUTOINDEX"),
    ({"metric": "DOT"}, "--metric DOT: use one of IP, COSINE, L2"),
    ({"batch_size": 0}, "--batch-size 0"),
    ({"scene": "bad-name"}, "--scene 'bad-name'"),
    ({"version": "v.1"}, "--version 'v.1'"),
])
def test_bad_settings_are_refused(tmp_path, lite, kwargs, expected):
    manifest = write_manifest(tmp_path, "m", 8)
    ids, vecs = vectors(10, 8)
    scene, version = kwargs.pop("scene", "docs"), kwargs.pop("version", "1")
    with pytest.raises(MmsearchError, match=expected):
        push_vectors(lite, scene, version, manifest, chunks(ids, vecs, 10), 10, corpus_of(ids), **kwargs)


def test_ivf_flat_on_lite(tmp_path, lite):
    manifest = write_manifest(tmp_path, "m", 8)
    ids, vecs = vectors(500, 8)
    summary = push_vectors(lite, "docs", "1", manifest, chunks(ids, vecs, 500), 500, corpus_of(ids),
                           index_type="ivf_flat", index_params={"nlist": 16})
    assert summary["index"] == "IVF_FLAT" and summary["entities"] == 500


def test_auto_index_picks_by_size_and_an_explicit_type_overrides_it():
    threshold = AUTO_INDEX["ivf_from_rows"]
    small = validate_index("x.db", "auto", "IP", None, rows=threshold - 1)
    large = validate_index("x.db", "auto", "ip", None, rows=threshold)
    assert (small["type"], small["params"]) == ("FLAT", {})
    assert large["type"] == "IVF_FLAT" and large["metric"] == "IP"
    assert large["params"] == AUTO_INDEX["params"]
    assert large["search_params"] == AUTO_INDEX["search_params"]
    assert validate_index("x.db", "auto", "IP", {"nlist": 64}, rows=threshold)["params"] == {"nlist": 64}
    assert validate_index("x.db", "flat", "IP", None, rows=10 * threshold)["type"] == "FLAT"
    with pytest.raises(MmsearchError, match="--index-type auto needs the number of vectors"):
        validate_index("x.db", "auto", "IP", None)


def test_push_picks_the_index_by_size_and_records_it_with_its_search_params(tmp_path, lite, monkeypatch):
    manifest = write_manifest(tmp_path, "m", 8)
    ids, vecs = vectors(500, 8)
    assert push_vectors(lite, "docs", "1", manifest, chunks(ids, vecs, 500), 500, corpus_of(ids))["index"] == "FLAT"
    monkeypatch.setitem(AUTO_INDEX, "ivf_from_rows", 400)
    assert push_vectors(lite, "docs", "2", manifest, chunks(ids, vecs, 500), 500, corpus_of(ids))["index"] == "IVF_FLAT"
    client = connect(lite)
    try:
        small, large = (read_manifest(client, f"docs_{v}")["index"] for v in ("1", "2"))
        described = client.describe_index("docs_2", "vector")
    finally:
        close(client, lite)
    assert small == {"type": "FLAT", "params": {}, "chosen": "auto: 500 rows", "metric": "IP"}
    assert large["type"] == "IVF_FLAT" and large["search_params"] == {"nprobe": 16} and large["chosen"] == "auto: 500 rows"
    assert described["index_type"] == "IVF_FLAT" and described["nlist"] == "128"


def test_sigkill_half_way_then_rerun_is_exact(tmp_path, lite):
    manifest = write_manifest(tmp_path / "repo", "m", 64)
    ids, vecs = vectors(60000, 64, seed=1)
    write_vectors(tmp_path / "work", manifest, ids, vecs)
    args = ["push-milvus", "--workdir", str(tmp_path / "work"), "--milvus-uri", lite, "--scene", "big",
            "--version", "1", "--repository", str(tmp_path / "repo"), "--model", "m", "--batch-size", "500"]
    killed = job_killed_after(5000, *args)  # after the 10th of 120 batches
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    client = connect(lite)
    try:
        half = count(client, "big_1")
        assert 0 < half < len(ids) and not is_complete(client, "big_1")
    finally:
        close(client, lite)
    summary = json.loads(run_job(*args).stdout.strip().splitlines()[-1])
    assert summary["entities"] == len(ids) and summary["created"] is False
    client = connect(lite)
    try:
        assert count(client, "big_1") == len(ids)  # no duplicates
        assert all_present(client, "big_1", ids)                 # no missing ids
        assert is_complete(client, "big_1")
    finally:
        close(client, lite)


@pytest.fixture()
def cli_inputs(tmp_path):
    manifest = write_manifest(tmp_path / "repo", "m", 8)
    ids, vecs = vectors(20, 8)
    write_vectors(tmp_path / "work", manifest, ids, vecs)
    write_manifest(tmp_path / "repo", "other", 8, seed="x")
    return tmp_path


@pytest.mark.parametrize("case, expected", [
    ("unknown-model", "error: model 'nope': no finished export"),
    ("wrong-model", "error: the vectors in "),
    ("no-vectors", "error: "),
    ("unreachable", "error: cannot reach Milvus at http://127.0.0.1:"),
    ("hnsw-on-lite", "error: --index-type HNSW: Milvus Lite"),
    ("bad-index-params", "error: --index-params '{oops': not valid JSON"),
    ("missing-folder", "error: --milvus-uri "),
])
def test_cli_bad_input_exits_non_zero_with_one_line(cli_inputs, case, expected):
    tmp = cli_inputs
    opts = {"--workdir": str(tmp / "work"), "--milvus-uri": str(tmp / "milvus.db"), "--scene": "s", "--version": "1",
            "--repository": str(tmp / "repo"), "--model": "m", "--timeout": "2"}
    opts.update({
        "unknown-model": {"--model": "nope"},
        "wrong-model": {"--model": "other"},
        "no-vectors": {"--workdir": str(tmp / "empty")},
        "unreachable": {"--milvus-uri": f"http://127.0.0.1:{free_port()}"},
        "hnsw-on-lite": {"--index-type": "HNSW"},
        "bad-index-params": {"--index-params": "{oops"},
        "missing-folder": {"--milvus-uri": str(tmp / "no" / "milvus.db")},
    }[case])
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "push-milvus",
                             *[x for kv in opts.items() for x in kv]], capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and lines[0].startswith(expected), result.stderr


def test_vectors_of_an_earlier_corpus_are_refused(cli_inputs):
    """Prepare again in the same workdir (a smaller corpus), skip encode, push: the old vectors
    once went in. Their recorded corpus fingerprint must match the corpus, or push refuses."""
    tmp = cli_inputs
    run_job("prepare", "--workdir", str(tmp / "work"), "--source-kind", "stdlib", "--source", "csv")
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "push-milvus", "--workdir", str(tmp / "work"),
                             "--milvus-uri", str(tmp / "milvus.db"), "--scene", "s", "--version", "1",
                             "--repository", str(tmp / "repo"), "--model", "m"],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1, result.stderr
    assert "were encoded from another corpus (20 records" in lines[0] and "re-run `mmsearch job encode`" in lines[0]
    assert not (tmp / "milvus.db").exists() or "s_1" not in lines[0]
