"""int8 copies of an exported tower: three onnxruntime methods, and how export picks one.

- :func:`dynamic`: MatMul/Gemm weights int8
  per output channel, activations quantized at run time from each batch's own
  range (uint8); onnxruntime runs MatMulInteger kernels (VNNI on these cores).
  No calibration set.
- :func:`static_qdq` (for the benchmarks' comparison): QDQ format, weights
  int8 per channel, activations uint8 per tensor with ranges calibrated
  (MinMax) on inputs run through the fp32 model. Fused graphs hold
  com.microsoft ops that plain ONNX shape inference cannot type, and the QDQ
  quantizer then silently skips every MatMul after them; so the model goes
  through onnxruntime's symbolic shape inference first (``quant_pre_process``).

Measured (bench/clip.py, bench/indexing.py: min cosine against the fp32
model on the parity inputs; figures in docs/benchmarks.md): on the CLIP
ViT-B/32 image tower both pass the gate and dynamic is the faster (it leaves
the attention score products in float); on the real all-MiniLM-L6-v2 both
fall below the 0.99 gate, which refuses them, static by far the more (short
inputs lose most: the empty text and one-word texts). Hence dynamic for export.
- :func:`blockwise`: every MatMul with a constant weight becomes onnxruntime's
  ``MatMulNBits`` with 8-bit weights in blocks of :data:`BLOCK` rows along
  the inner dimension (one scale per block and output column) and
  ``accuracy_level`` 4: the activations are quantized to int8 at run time
  per block of the same size, so one outlier dimension costs the precision
  of its block only, not of the whole tensor as in :func:`dynamic`. No
  calibration set.

Measured on the real all-MiniLM-L6-v2 (docs/benchmarks.md, bench/quantize.py):
dynamic loses most on short texts (min cosine about 0.975, whichever nodes
are kept in float: the feed-forward MatMuls lose most, the attention output
projections almost nothing) and static QDQ more; blockwise keeps about 0.999.
:data:`METHODS` is the order ``export --int8`` tries them in (``auto``): the
first copy that passes the tower's int8 gate is published, so the CLIP image
tower keeps dynamic (the faster there) and MiniLM gets blockwise.
Graphs with untyped tensors are quantized with ``DefaultTensorType`` float.
:func:`quantized_ops` counts the integer ops of a result, so a copy that
quantized nothing is never published as int8.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Iterable, Mapping

import numpy as np

OP_TYPES = ["MatMul", "Gemm"]
_FLOAT = 1  # onnx.TensorProto.FLOAT
INTEGER_OPS = ("MatMulNBits", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "QuantizeLinear", "QGemm",
               "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def dynamic(fp32: Path, out: Path) -> dict:
    """Write the dynamic int8 copy of ``fp32`` to ``out``; returns what the manifest records of it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only) onnxruntime's u8 x s8 products
    # saturate in 16 bits with full-range weights, and the same model's parity drops on those machines
    # alone; with 7 bits it is the same everywhere.
    quantize_dynamic(str(fp32), str(out), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=OP_TYPES, extra_options={"DefaultTensorType": _FLOAT})
    return {"method": "dynamic", "weights": "int8 per channel, 7-bit range", "activations": "uint8 per batch, at run time",
            "ops": OP_TYPES, "quantized_ops": quantized_ops(out)}


class _Feeds:
    """An onnxruntime CalibrationDataReader over prepared feeds."""

    def __init__(self, feeds: Iterable[Mapping[str, np.ndarray]]):
        self._feeds = iter(list(feeds))

    def get_next(self):
        return next(self._feeds, None)


def static_qdq(fp32: Path, out: Path, calibration: Iterable[Mapping[str, np.ndarray]]) -> dict:
    """Write the static QDQ int8 copy of ``fp32`` to ``out`` (see module doc); returns its record."""
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    feeds = list(calibration)
    if not feeds:
        raise ValueError("static quantization needs at least one calibration batch")
    with tempfile.TemporaryDirectory(prefix="mmsearch-quantize-") as tmp:
        typed = Path(tmp) / "typed.onnx"
        quant_pre_process(str(fp32), str(typed), skip_optimization=True)
        quantize_static(str(typed), str(out), _Feeds(feeds), quant_format=QuantFormat.QDQ, per_channel=True,
                        weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8, op_types_to_quantize=OP_TYPES,
                        calibrate_method=CalibrationMethod.MinMax,
                        extra_options={"DefaultTensorType": _FLOAT, "QuantizeBias": False})
    rows = sum(int(next(iter(f.values())).shape[0]) for f in feeds)
    return {"method": "static-qdq", "weights": "int8 per channel", "activations": "uint8 per tensor, MinMax",
            "ops": OP_TYPES, "calibration_inputs": rows, "quantized_ops": quantized_ops(out)}


BLOCK = 32


def blockwise(fp32: Path, out: Path, block: int = BLOCK) -> dict:
    """Write the blockwise int8 copy of ``fp32`` to ``out`` (see module doc); returns its record."""
    import onnx
    from onnx import helper, numpy_helper
    from onnxruntime.capi._pybind_state import quantize_matmul_8bits

    model = onnx.load(str(fp32))
    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    nodes = []
    for node in graph.node:
        tensor = weights.get(node.input[1]) if node.op_type == "MatMul" and len(node.input) == 2 else None
        w = numpy_helper.to_array(tensor) if tensor is not None else None
        if w is None or w.ndim != 2 or w.dtype != np.float32:
            nodes.append(node)
            continue
        k, n = w.shape
        blocks = -(-k // block)
        padded = np.ascontiguousarray(np.pad(w, ((0, blocks * block - k), (0, 0))))
        packed = np.zeros((n, blocks, block), np.uint8)
        scales = np.zeros((n, blocks), np.float32)
        quantize_matmul_8bits(packed, padded, scales, np.zeros((n, blocks), np.uint8), block, n, blocks * block, True)
        q, s = numpy_helper.from_array(packed, f"{tensor.name}_int8"), numpy_helper.from_array(scales, f"{tensor.name}_scales")
        graph.initializer.extend([q, s])
        nodes.append(helper.make_node("MatMulNBits", [node.input[0], q.name, s.name], list(node.output),
                                      name=f"{node.name}_int8", domain="com.microsoft", K=k, N=n, bits=8,
                                      block_size=block, accuracy_level=4))
    del graph.node[:]
    graph.node.extend(nodes)
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    onnx.save(model, str(out))
    return {"method": "blockwise", "weights": f"int8 in blocks of {block} per output column",
            "activations": f"int8 per block of {block}, at run time", "ops": ["MatMul"], "quantized_ops": quantized_ops(out)}


METHODS = ("dynamic", "blockwise")
"""What ``export --int8`` tries, in this order (``auto``); ``--int8-method`` names one."""


def quantize(method: str, fp32: Path, out: Path) -> dict:
    """The ``method`` (one of :data:`METHODS`) int8 copy of ``fp32`` at ``out``; its record."""
    if method not in METHODS:
        raise ValueError(f"int8 method {method!r}: expected one of {', '.join(METHODS)}")
    return {"dynamic": dynamic, "blockwise": blockwise}[method](fp32, out)


def quantized_ops(path: Path) -> int:
    """How many integer (quantization) ops the model at ``path`` holds."""
    import onnx

    return sum(node.op_type in INTEGER_OPS for node in onnx.load(str(path), load_external_data=False).graph.node)
