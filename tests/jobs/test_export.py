"""mmsearch job export: parity of every supported family, Triton repository format, S3, refusals."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from mmsearch.jobs import parity
from mmsearch.jobs.app import job_app
from mmsearch.jobs.export import export_model
from mmsearch.core.model_repository import ModelManifest, ModelRepository
from mmsearch.core import artifacts

TEXTS = ["how do I read a csv file", "一只猫在沙发上", "", "a " * 400, "sorting a list of dicts by value!"]


def run_cli(*args: str):
    import mmsearch.jobs.cli  # noqa: F401  (registers the stages)

    return CliRunner().invoke(job_app, list(args))


def error_lines(result) -> list[str]:
    return [line for line in result.stderr.splitlines() if line.strip()]


def parse_config(folder: Path) -> model_config_pb2.ModelConfig:
    return text_format.Parse((folder / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())


def onnx_text(folder: Path, texts: list[str]) -> np.ndarray:
    session = ort.InferenceSession(str(folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    return parity.onnx_text_runner(session, folder)(texts)


def check_text_repository(folder: Path, name: str, dimension: int) -> dict:
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest["name"] == name and manifest["tower"] == "text" and manifest["dimension"] == dimension
    assert manifest["metric"] == "IP" and manifest["output"] == "embedding"
    assert manifest["inputs"] == ["input_ids", "attention_mask"]
    assert manifest["parity"]["n"] >= 256 and manifest["parity"]["min_cosine"] >= 0.9999
    assert manifest["onnx_sha256"] == artifacts.file_sha256(folder / "1" / "model.onnx")
    assert manifest["towers"]["text"] == {"name": name, "onnx_sha256": manifest["onnx_sha256"]}
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (folder / file).is_file(), file
    tokenizer = json.loads((folder / "tokenizer.json").read_text())
    assert tokenizer["padding"] is None and tokenizer["truncation"]["max_length"] == manifest["max_length"]
    config = parse_config(folder)
    assert config.name == name and config.backend == "onnxruntime" and config.max_batch_size == 64
    assert [(i.name, i.data_type, list(i.dims)) for i in config.input] == [
        ("input_ids", model_config_pb2.TYPE_INT64, [-1]), ("attention_mask", model_config_pb2.TYPE_INT64, [-1])]
    assert [(o.name, o.data_type, list(o.dims)) for o in config.output] == [("embedding", model_config_pb2.TYPE_FP32, [dimension])]
    assert config.dynamic_batching.max_queue_delay_microseconds == 100
    assert config.instance_group[0].count == 1
    return manifest


def st_reference(source: Path, texts: list[str]) -> np.ndarray:
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(str(source), device="cpu").encode(texts, normalize_embeddings=True)


def test_minilm_repository_and_parity(minilm_repo, minilm_source):
    folder = minilm_repo / "minilm"
    manifest = check_text_repository(folder, "minilm", 384)
    assert manifest["family"] == "sentence-transformers" and manifest["max_length"] == 256
    assert manifest["optimized"] is True  # the fused BERT graph kept parity
    import onnx

    ops = {node.op_type for node in onnx.load(str(folder / "1" / "model.onnx")).graph.node}
    assert {"Attention", "SkipLayerNormalization"} <= ops  # attention fused, not the SDPA pattern
    got, want = onnx_text(folder, TEXTS), st_reference(minilm_source, TEXTS)
    assert parity.compare(got, want)["min_cosine"] >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)
    assert ModelRepository(minilm_repo).manifest("minilm").to_dict() == manifest


def test_tiny_multilingual_distilbert_dense(tiny_multilingual_repo, tiny_multilingual_source):
    folder = tiny_multilingual_repo / "tiny-multilingual"
    check_text_repository(folder, "tiny-multilingual", 24)  # the Dense layer's output size
    got, want = onnx_text(folder, TEXTS), st_reference(tiny_multilingual_source, TEXTS)
    assert parity.compare(got, want)["min_cosine"] >= 0.9999
    assert np.allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)  # normalised although the model has no Normalize


def test_tiny_clip_text_and_image_towers(tiny_clip_repo, tiny_clip_source):
    import torch
    from transformers import CLIPModel

    text = check_text_repository(tiny_clip_repo / "tiny-clip", "tiny-clip", 16)
    image_folder = tiny_clip_repo / "tiny-clip-image"
    image = json.loads((image_folder / "manifest.json").read_text())
    assert image["tower"] == "image" and image["inputs"] == ["pixel_values"] and image["image_size"] == 32
    assert image["parity"]["min_cosine"] >= 0.9999 and image["parity"]["n"] >= 256
    assert text["towers"] == image["towers"] == {
        "text": {"name": "tiny-clip", "onnx_sha256": text["onnx_sha256"]},
        "image": {"name": "tiny-clip-image", "onnx_sha256": image["onnx_sha256"]}}
    assert (image_folder / "preprocessor_config.json").is_file()
    config = parse_config(image_folder)
    assert [(i.name, list(i.dims)) for i in config.input] == [("pixel_values", [3, 32, 32])]
    assert list(config.output[0].dims) == [16]
    # independent check of the vision tower against CLIPModel.get_image_features
    pixels = parity.pixel_values(image_folder, parity.varied_images(8, seed=7))
    session = ort.InferenceSession(str(image_folder / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(["embedding"], {"pixel_values": pixels})[0]
    with torch.inference_mode():
        out = CLIPModel.from_pretrained(str(tiny_clip_source)).eval().get_image_features(pixel_values=torch.from_numpy(pixels))
    want = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1).numpy()
    assert parity.compare(got, want)["min_cosine"] >= 0.9999


def test_broken_export_is_refused_and_publishes_nothing(tiny_multilingual_source, tmp_path, monkeypatch):
    """A tower that ignores the attention mask (a real export bug) fails the gate; the old version stays."""
    from mmsearch.jobs import towers

    repo = tmp_path / "repo"
    (repo / "m").mkdir(parents=True)
    (repo / "m" / "manifest.json").write_text('{"previous": true}')
    original = towers.SentenceTower.forward
    monkeypatch.setattr(towers.SentenceTower, "forward",
                        lambda self, input_ids, attention_mask: original(self, input_ids, attention_mask * 0 + 1))
    result = run_cli("export", "--model", str(tiny_multilingual_source), "--name", "m", "--repository", str(repo))
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: parity gate failed for m: min cosine"), result.stderr
    assert sorted(p.name for p in repo.iterdir()) == ["m"]
    assert [p.name for p in (repo / "m").iterdir()] == ["manifest.json"]
    assert json.loads((repo / "m" / "manifest.json").read_text()) == {"previous": True}


def test_int8_copy_of_the_document_tower_is_gated_and_queried_by_the_fp32_tower(tiny_multilingual_source, tmp_path):
    import onnx

    from mmsearch.jobs.encode import encode, read_vectors
    from mmsearch.jobs.prepare import prepare
    from mmsearch.core.milvus.record import CollectionRecord
    from mmsearch.services.serving.pipeline.activation import check_consistency

    repo = tmp_path / "repo"
    result = run_cli("export", "--model", str(tiny_multilingual_source), "--name", "m", "--repository", str(repo),
                     "--int8")
    assert result.exit_code == 0, result.stderr
    repository = ModelRepository(repo)
    fp32, int8 = repository.manifest("m"), repository.manifest("m-int8")
    assert fp32.quantization is None and int8.quantization["method"] == "dynamic"
    assert int8.quantization["quantized_ops"] > 0 and int8.tower == "text" and int8.dimension == fp32.dimension
    assert int8.parity["n"] >= 256 and 0.99 <= int8.parity["min_cosine"] < fp32.parity["min_cosine"]
    assert int8.onnx_sha256 == artifacts.file_sha256(repo / "m-int8" / "1" / "model.onnx") != fp32.onnx_sha256
    assert dict(int8.towers) == {"text": {"name": "m", "onnx_sha256": fp32.onnx_sha256},
                                 "document": {"name": "m-int8", "onnx_sha256": int8.onnx_sha256}}
    ops = {n.op_type for n in onnx.load(str(repo / "m-int8" / "1" / "model.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    for file in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        assert (repo / "m-int8" / file).read_bytes() == (repo / "m" / file).read_bytes()
    assert parse_config(repo / "m-int8").name == "m-int8"
    assert sorted(p.name for p in (repo / "m-int8").rglob("*.onnx")) == ["model.onnx"]
    # Documents encoded by the int8 tower, queried by the fp32 one: the same neighbourhoods.
    work = tmp_path / "work"
    prepare(str(work), "stdlib", source="csv,json")
    encode(str(work), str(repo), "m-int8", text_field="answer", device="cpu")
    _, chunks = read_vectors(str(work))
    by_id = {int(i): v for ids, vectors in chunks for i, v in zip(ids, vectors)}
    records = [json.loads(line) for line in (work / "corpus.jsonl").read_text().splitlines()]
    exact = onnx_text(repo / "m", [r["answer"] for r in records])
    cosines = np.sum(np.stack([by_id[r["id"]] for r in records]) * exact, axis=1)
    assert len(records) > 20 and cosines.min() >= 0.99
    record = CollectionRecord.new(int8.record(), "docs", "1", {}).manifest
    assert record["quantization"]["method"] == "dynamic"
    assert record["quantization"]["source"] == {"name": "m", "onnx_sha256": fp32.onnx_sha256}
    check_consistency("m", fp32, "docs", record)  # serving's check: the fp32 query tower fits the collection


@pytest.mark.slow
def test_an_int8_copy_below_the_gate_is_refused_and_publishes_nothing(minilm_source, tmp_path):
    """Dynamic int8 loses too much on the real all-MiniLM-L6-v2 (min cosine about 0.975 on short texts): asked
    for by name, it is refused like a broken export, nothing published, not even the fp32 towers."""
    repo = tmp_path / "repo"
    result = run_cli("export", "--model", str(minilm_source), "--name", "m", "--repository", str(repo), "--int8",
                     "--int8-method", "dynamic")
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith("error: int8 parity gate failed for m-int8: min cosine dynamic 0.9"), lines
    assert "< 0.99 over 256 inputs" in lines[0] and "nothing published (export without --int8)" in lines[0]
    assert not repo.exists() or not any(repo.iterdir())


@pytest.mark.slow
def test_int8_auto_refuses_dynamic_and_ships_smooth_for_minilm_queried_by_an_int8_arm(minilm_source, tmp_path):
    """--int8 (auto) tries dynamic, which the gate refuses, then smooth (dynamic after SmoothQuant's migration),
    which passes: published with what was refused, and as an int8 copy of the fp32 tower it may query a
    collection the fp32 tower built."""
    import onnx

    from mmsearch.core.milvus.record import CollectionRecord
    from mmsearch.services.serving.pipeline.activation import ConsistencyError, check_consistency

    repo = tmp_path / "repo"
    result = run_cli("export", "--model", str(minilm_source), "--name", "m", "--repository", str(repo), "--int8")
    assert result.exit_code == 0, result.stderr
    repository = ModelRepository(repo)
    fp32, int8 = repository.manifest("m"), repository.manifest("m-int8")
    q = int8.quantization
    assert q["method"] == "smooth" and [r["method"] for r in q["refused"]] == ["dynamic"]
    assert q["calibration_inputs"] == int8.parity["n"] and q["float_matmuls"] == 6
    assert q["refused"][0]["min_cosine"] < 0.99 <= int8.parity["min_cosine"]
    assert q["source"] == {"name": "m", "onnx_sha256": fp32.onnx_sha256}
    ops = [n.op_type for n in onnx.load(str(repo / "m-int8" / "1" / "model.onnx")).graph.node]
    # the fused attention and the other 12 MatMuls in int8; the 6 fed by a GELU in float
    assert ops.count("QAttention") == 6 and ops.count("MatMulInteger") == 12 and ops.count("MatMul") == 6
    built_by_fp32 = CollectionRecord.new(fp32.record(), "docs", "1", {}).manifest
    check_consistency("m-int8", int8, "docs", built_by_fp32)
    forged = ModelManifest.from_dict({**int8.to_dict(), "quantization": {**q, "source": {"name": "m", "onnx_sha256": "0" * 64}}})
    with pytest.raises(ConsistencyError, match="does not match collection 'docs'"):
        check_consistency("m-int8", forged, "docs", built_by_fp32)


def test_export_to_s3_reads_back_byte_identical(tiny_clip_source, s3_server, tmp_path):
    repo = s3_server.uri("models", "v1")
    manifests = export_model(str(tiny_clip_source), "s3clip", repo)
    assert set(manifests) == {"s3clip", "s3clip-image"}
    for name, manifest in manifests.items():
        files = artifacts.list_files(artifacts.join(repo, name))
        assert "manifest.json" in files and "config.pbtxt" in files and "1/model.onnx" in files
        onnx = artifacts.read_bytes(artifacts.join(repo, name, "1", "model.onnx"))
        (tmp_path / f"{name}.onnx").write_bytes(onnx)
        assert artifacts.file_sha256(tmp_path / f"{name}.onnx") == manifest.onnx_sha256
        assert ModelRepository(repo).manifest(name) == manifest
        text_format.Parse(artifacts.read_bytes(artifacts.join(repo, name, "config.pbtxt")).decode(),
                          model_config_pb2.ModelConfig())
    local = artifacts.materialize(artifacts.join(repo, "s3clip"), cache_dir=tmp_path / "cache")
    assert json.loads((local / "manifest.json").read_text()) == manifests["s3clip"].to_dict()


@pytest.mark.parametrize("args, message", [
    (["--model", "/no/such/folder"], "error: --model /no/such/folder: folder not found"),
    (["--model", "no-such-org/no-such-model"], "error: --model 'no-such-org/no-such-model': not a local folder and not available"),
    (["--family", "bert"], "error: --family 'bert'"),
    (["--max-batch-size", "0"], "error: --triton-max-batch-size must be >= 1"),
    (["--parity-inputs", "10"], "error: --parity-inputs must be >= 256"),
    (["--instance-kind", "tpu"], "error: --instance-kind 'tpu'"),
])
def test_bad_input_one_clear_line(args, message, minilm_source, tmp_path):
    base = {"--model": str(minilm_source), "--name": "m", "--repository": str(tmp_path / "repo")}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    result = run_cli("export", *[x for kv in base.items() for x in kv])
    assert result.exit_code == 1
    lines = error_lines(result)
    assert len(lines) == 1 and lines[0].startswith(message), result.stderr
    assert not (tmp_path / "repo").exists()


@pytest.fixture()
def unused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_unreachable_s3_repository_fails_fast(minilm_source, unused_port):
    """A real process: exit 1 and one line naming the endpoint, before any export work."""
    env = {"MMSEARCH_S3_ENDPOINT_URL": f"http://127.0.0.1:{unused_port}", "AWS_ACCESS_KEY_ID": "x",
           "AWS_SECRET_ACCESS_KEY": "x", "AWS_DEFAULT_REGION": "us-east-1", "AWS_MAX_ATTEMPTS": "1"}
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", "export", "--model", str(minilm_source),
                             "--name", "m", "--repository", "s3://bucket/models"],
                            capture_output=True, text=True, timeout=120, env={**os.environ, **env})
    assert result.returncode == 1
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: cannot reach S3 for s3://bucket/models/m"), result.stderr
