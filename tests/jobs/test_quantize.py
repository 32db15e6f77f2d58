"""jobs/quantize.py's smooth method: the smoothing scales (pure) and the migration, which leaves the float
model's outputs unchanged (the real all-MiniLM-L6-v2); export's gate on its int8 copy is in test_export."""
from __future__ import annotations

import numpy as np
import onnx
import pytest

from mmsearch.core import onnx as sessions
from mmsearch.jobs import parity, quantize

TEXTS = ["how do I read a csv file", "", "a", "一只猫在沙发上", "sorting a list of dicts by value! " * 20]


def test_smoothing_scales_move_a_share_of_each_channel_range_into_the_weights():
    scales = quantize.smoothing_scales(np.array([16.0, 1.0, 0.0, 4.0]), np.array([1.0, 4.0, 2.0, 0.0]), alpha=0.5)
    assert scales.dtype == np.float32
    assert np.allclose(scales, [4.0, 0.5, 1.0, 1.0])  # sqrt(16)/sqrt(1), sqrt(1)/sqrt(4); a zero range: untouched
    assert np.allclose(quantize.smoothing_scales([8.0], [2.0], alpha=1.0), [8.0])
    assert np.allclose(quantize.smoothing_scales([8.0], [2.0], alpha=0.0), [0.5])


def test_migration_keeps_the_float_model_and_leaves_the_gelu_fed_matmuls(minilm_repo, tmp_path):
    folder = minilm_repo / "minilm"
    model = onnx.load(str(folder / "1" / "model.onnx"))
    before = {n.op_type for n in model.graph.node}
    calibration = parity.calibration_feeds(folder, "text", 16)
    assert len(calibration) == 16 and calibration[0]["input_ids"].shape[0] == 1
    kept = quantize.migrate(model, calibration)
    producers = {out: n.op_type for n in model.graph.node for out in n.output}
    matmuls = [n for n in model.graph.node if n.op_type == "MatMul"]
    assert len(kept) == 6 and {producers[n.input[0]] for n in matmuls if n.name in kept} <= set(quantize.GELUS)
    # every other MatMul and the fused attention read a smoothed input
    assert all(n.input[0].endswith("_smoothed") for n in model.graph.node
               if n.op_type in quantize.SMOOTHED_OPS and n.name not in kept)
    assert "Attention" in before and sum(n.op_type == "Mul" and n.name.endswith("_smooth") for n in model.graph.node) == 18
    onnx.save(model, str(tmp_path / "smoothed.onnx"))
    run = lambda path: parity.onnx_text_runner(sessions.session(path), folder)(TEXTS)  # noqa: E731
    assert np.abs(run(tmp_path / "smoothed.onnx") - run(folder / "1" / "model.onnx")).max() < 1e-5


def test_smooth_refuses_an_empty_calibration_set(minilm_repo, tmp_path):
    with pytest.raises(ValueError, match="at least one calibration input"):
        quantize.smooth(minilm_repo / "minilm" / "1" / "model.onnx", tmp_path / "out.onnx", [])
