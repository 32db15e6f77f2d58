"""Pure pieces of the pipeline: deadline split, model/index consistency, summary ordering."""
import pytest

from services.serving.pipeline import ConsistencyError, check_consistency, stage_budget
from services.serving.summary import order_documents, plain


def test_deadline_split_gives_later_stages_what_is_left():
    stages = ("preprocess", "embed", "match", "summary")
    assert stage_budget(1.2, "preprocess", stages) == pytest.approx(0.2)
    assert stage_budget(1.0, "summary", ("summary",)) == pytest.approx(1.0)
    assert stage_budget(-1, "embed", stages) == 0.0


MANIFEST = {"name": "clip-image", "tower": "image", "dimension": 8, "onnx_sha256": "img",
            "towers": {"text": {"name": "clip", "onnx_sha256": "txt"}, "image": {"name": "clip-image", "onnx_sha256": "img"}}}


def test_consistency_accepts_a_tower_of_the_same_export():
    check_consistency("clip", {"onnx_sha256": "txt", "dimension": 8}, "t2i", MANIFEST)


def test_consistency_names_the_mismatch():
    with pytest.raises(ConsistencyError, match="'minilm' does not match collection 't2i'.*clip \\(text\\)"):
        check_consistency("minilm", {"onnx_sha256": "x"}, "t2i", MANIFEST)
    with pytest.raises(ConsistencyError, match="sha256"):
        check_consistency("clip", {"onnx_sha256": "other"}, "t2i", MANIFEST)
    with pytest.raises(ConsistencyError, match="16-dim"):
        check_consistency("clip", {"onnx_sha256": "txt", "dimension": 16}, "t2i", MANIFEST)


def test_summary_order_preserved_missing_counted():
    docs, missing = order_documents([3, 1, 2], [{"_id": 1, "a": 1}, {"_id": 3, "a": 3}])
    assert [d and d["_id"] for d in docs] == [3, 1, None] and missing == 1
    assert plain({"x": float("nan"), "b": b"\x01", "l": [1, "a"]}) == {"x": None, "b": "01", "l": [1, "a"]}


def test_token_rows_cut_each_text_to_its_own_tokens():
    from types import SimpleNamespace

    import numpy as np

    from services.common.codec import to_tensor
    from services.serving.pipeline import Pipeline

    ids = np.array([[101, 7, 102, 0, 0], [101, 8, 9, 10, 102]], dtype=np.int64)
    mask = (ids != 0).astype(np.int64)
    rows = Pipeline._token_rows(SimpleNamespace(input_ids=to_tensor(ids), attention_mask=to_tensor(mask)), 2)
    assert rows[0]["input_ids"].tolist() == [[101, 7, 102]] and rows[0]["attention_mask"].tolist() == [[1, 1, 1]]
    assert rows[1]["input_ids"].tolist() == [[101, 8, 9, 10, 102]]
    left = np.array([[0, 0, 101, 7, 102]], dtype=np.int64)  # left padding: nothing to cut
    rows = Pipeline._token_rows(SimpleNamespace(input_ids=to_tensor(left), attention_mask=to_tensor((left != 0).astype(np.int64))), 1)
    assert rows[0]["input_ids"].tolist() == left.tolist()
