"""The model repository: tower names, typed manifests, the version's ONNX file, clear errors."""
from __future__ import annotations

import json

import pytest

from mmsearch.core.model_repository import ManifestError, ModelManifest, ModelRepository, model_mismatch, tower_name

RAW = {"name": "clip", "tower": "text", "dimension": 16, "onnx_sha256": "abc", "model_version": 3,
       "family": "clip", "inputs": ["input_ids", "attention_mask"], "max_length": 77, "unknown_key": 1,
       "towers": {"text": {"name": "clip", "onnx_sha256": "abc"}, "image": {"name": "clip-image", "onnx_sha256": "d"}}}


def write_model(repo, name: str, raw: dict, version: int) -> None:
    (repo / name / str(version)).mkdir(parents=True)
    (repo / name / str(version) / "model.onnx").write_bytes(b"onnx")
    (repo / name / "manifest.json").write_text(json.dumps(raw))


def test_tower_names_are_spelled_in_one_place():
    assert (tower_name("clip", "text"), tower_name("clip", "image")) == ("clip", "clip-image")
    with pytest.raises(ValueError, match="tower kind 'audio'"):
        tower_name("clip", "audio")


def test_manifest_round_trip_and_record():
    manifest = ModelManifest.from_dict(RAW)
    assert manifest.model_version == 3 and manifest.inputs == ("input_ids", "attention_mask")
    assert manifest.onnx_rel == "3/model.onnx"
    assert ModelManifest.from_dict(manifest.to_dict()) == manifest
    assert set(manifest.record()) == {"name", "tower", "family", "source", "dimension", "metric", "onnx_sha256",
                                      "towers"}


def test_built_by_this_model_means_the_same_model_onnx():
    built = {"name": "m", "onnx_sha256": "a" * 64}
    assert model_mismatch(built, {"name": "m", "onnx_sha256": "a" * 64}) is None
    assert model_mismatch(built, {"name": "m2", "onnx_sha256": "b" * 64}) == \
        f"model 'm' (onnx {'a' * 12}), not 'm2' (onnx {'b' * 12})"
    assert model_mismatch({"name": "m"}, {"name": "m"}) is not None  # no recorded hash never matches


def test_a_query_tower_of_the_export_that_built_the_vectors_matches():
    clip = {"name": "clip-image", "tower": "image", "onnx_sha256": "img",
            "towers": {"text": {"name": "clip", "onnx_sha256": "txt"}, "image": {"name": "clip-image", "onnx_sha256": "img"}}}
    assert model_mismatch(clip, {"name": "clip", "onnx_sha256": "txt"}, any_tower=True) is None
    assert model_mismatch(clip, {"name": "clip", "onnx_sha256": "txt"}) is not None  # not the document tower
    assert model_mismatch(clip, {"name": "minilm", "onnx_sha256": "x"}, any_tower=True) == \
        "the export with towers clip (text), clip-image (image), not 'minilm'"
    assert model_mismatch(clip, {"name": "clip", "onnx_sha256": "y"}, any_tower=True) == \
        "model 'clip' (onnx txt), not 'clip' (onnx y)"
    legacy = {"name": "minilm", "tower": "text", "onnx_sha256": "s"}  # recorded before towers were
    assert model_mismatch(legacy, {"name": "minilm", "onnx_sha256": "s"}, any_tower=True) is None


@pytest.mark.parametrize("raw, words", [
    ({"name": "x"}, "lacks tower, dimension, onnx_sha256"),
    ({**RAW, "dimension": "wide"}, "dimension and model_version must be integers"),
    ({**RAW, "tower": "audio"}, "tower 'audio'"),
    ([1, 2], "not a JSON object"),
])
def test_bad_manifests_say_what_is_wrong(raw, words):
    with pytest.raises(ManifestError, match=words):
        ModelManifest.from_dict(raw)


def test_the_folder_finds_the_onnx_file_of_its_manifest_version(tmp_path):
    write_model(tmp_path, "clip", RAW, version=3)
    repo = ModelRepository(tmp_path)
    assert repo.has("clip") and not repo.has("minilm")
    folder = repo.folder("clip")
    assert folder.onnx_path == tmp_path / "clip" / "3" / "model.onnx"
    assert repo.manifest("clip").name == "clip"


def test_missing_and_unfinished_exports_are_clear(tmp_path):
    repo = ModelRepository(tmp_path)
    with pytest.raises(ManifestError, match="model 'minilm': no finished export.*run `mmsearch job export"):
        repo.folder("minilm")
    write_model(tmp_path, "half", {**RAW, "name": "half", "model_version": 2}, version=1)
    with pytest.raises(ManifestError, match="no ONNX model at .*manifest model_version 2"):
        repo.folder("half").onnx_path
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="not valid JSON"):
        repo.manifest("broken")
    with pytest.raises(ManifestError, match="model name '../x'"):
        repo.manifest("../x")


def test_publish_swaps_the_folder_in_whole(tmp_path):
    staged = tmp_path / "staged"
    write_model(staged.parent, "staged", RAW, version=3)
    repo = ModelRepository(tmp_path / "repo")
    repo.publish(staged, "clip")
    assert repo.folder("clip").onnx_path.read_bytes() == b"onnx"
