"""Pure pieces of serving: deadline split, error mapping, model/index consistency, summary ordering, token rows."""
import grpc
import numpy as np
import pytest

from mmsearch.core.model_repository import ModelManifest
from mmsearch.services.serving.pipeline.activation import ConsistencyError, check_consistency
from mmsearch.services.serving.errors import BadInput, Mismatch, StageError, Unavailable
from mmsearch.services.serving.backends.preprocessor import token_rows
from mmsearch.services.serving.pipeline.stages import stage_budget, status_for
from mmsearch.services.serving.backends.summary import order_documents, plain

Code = grpc.StatusCode


def test_deadline_split_gives_later_stages_what_is_left():
    stages = ("preprocess", "embed", "match", "summary")
    assert stage_budget(1.2, "preprocess", stages) == pytest.approx(0.2)
    assert stage_budget(1.0, "summary", ("summary",)) == pytest.approx(1.0)
    assert stage_budget(-1, "embed", stages) == 0.0


@pytest.mark.parametrize("exc, code", [
    (Unavailable("x"), Code.UNAVAILABLE), (BadInput("x"), Code.INVALID_ARGUMENT),
    (Mismatch("x"), Code.FAILED_PRECONDITION), (TimeoutError(), Code.DEADLINE_EXCEEDED),
    (RuntimeError("Lock is not acquired"), Code.UNAVAILABLE), (KeyError("k"), Code.UNAVAILABLE),
])
def test_every_failure_maps_to_a_status_naming_the_stage(exc, code):
    error = status_for("summary", exc, 0.25)
    assert isinstance(error, StageError) and error.code == code and str(error).startswith("summary: ")
    assert error.code != Code.UNKNOWN


def test_a_timeout_against_a_dependency_the_probe_sees_down_is_unavailable():
    error = status_for("match", TimeoutError(), 0.1, "milvus is down: refused")
    assert error.code == Code.UNAVAILABLE and "milvus is down" in error.message
    assert "100 ms share" in status_for("match", TimeoutError(), 0.1).message


def manifest(name: str, sha: str, dimension: int = 8) -> ModelManifest:
    return ModelManifest(name=name, tower="text", dimension=dimension, onnx_sha256=sha)


COLLECTION = {"name": "clip-image", "tower": "image", "dimension": 8, "onnx_sha256": "img",
              "towers": {"text": {"name": "clip", "onnx_sha256": "txt"}, "image": {"name": "clip-image", "onnx_sha256": "img"}}}


def test_consistency_accepts_a_tower_of_the_same_export():
    check_consistency("clip", manifest("clip", "txt"), "t2i", COLLECTION)


def test_consistency_names_the_mismatch():
    with pytest.raises(ConsistencyError, match="'minilm' does not match collection 't2i'.*clip \\(text\\)"):
        check_consistency("minilm", manifest("minilm", "x"), "t2i", COLLECTION)
    with pytest.raises(ConsistencyError, match="built by model 'clip' \\(onnx txt\\), not 'clip' \\(onnx other\\)"):
        check_consistency("clip", manifest("clip", "other"), "t2i", COLLECTION)
    with pytest.raises(ConsistencyError, match="16-dim"):
        check_consistency("clip", manifest("clip", "txt", 16), "t2i", COLLECTION)


def test_summary_order_preserved_missing_counted():
    docs, missing = order_documents([3, 1, 2], [{"_id": 1, "a": 1}, {"_id": 3, "a": 3}])
    assert [d and d["_id"] for d in docs] == [3, 1, None] and missing == 1
    assert plain({"x": float("nan"), "b": b"\x01", "l": [1, "a"]}) == {"x": None, "b": "01", "l": [1, "a"]}


def test_token_rows_cut_each_text_to_its_own_tokens():
    ids = np.array([[101, 7, 102, 0, 0], [101, 8, 9, 10, 102]], dtype=np.int64)
    rows = token_rows(ids, (ids != 0).astype(np.int64), 2)
    assert rows[0]["input_ids"].tolist() == [[101, 7, 102]] and rows[0]["attention_mask"].tolist() == [[1, 1, 1]]
    assert rows[1]["input_ids"].tolist() == [[101, 8, 9, 10, 102]]
    left = np.array([[0, 0, 101, 7, 102]], dtype=np.int64)  # left padding: nothing to cut
    assert token_rows(left, (left != 0).astype(np.int64), 1)[0]["input_ids"].tolist() == left.tolist()
