"""int8 copies of an exported tower: four onnxruntime methods, and how export picks one.

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

Measured on the real all-MiniLM-L6-v2 (docs/benchmarks.md):
dynamic loses most on short texts (min cosine about 0.975, whichever nodes
are kept in float: the feed-forward MatMuls lose most, the attention output
projections almost nothing) and static QDQ more; blockwise keeps about 0.999
but runs batches no faster than fp32.
- :func:`smooth`: :func:`dynamic` after SmoothQuant's migration (Xiao et al.,
  2022): one range per tensor cannot hold the few activation channels with
  outliers, so each channel ``j`` of an input is divided by ``s_j`` and the
  weight rows it meets multiplied by it (``s_j = max|x_j|^a / max|W_j|^(1-a)``,
  :data:`SMOOTH_ALPHA`; one ``Mul`` per input tensor, the product unchanged in
  float), with ``max|x_j|`` calibrated on inputs other than the gate's. It
  quantizes the fused ``Attention`` (QKV) too; a MatMul fed by a GELU (the
  feed-forward output projection) stays in float (:func:`float_matmuls`):
  GELU outputs keep outliers that smoothing does not tame (one such MatMul
  quantized cost up to 0.006 of min cosine on MiniLM).

Measured on the real all-MiniLM-L6-v2 (fused export), 2 cores with VNNI
(docs/benchmarks.md): smooth keeps min cosine 0.992 (dynamic 0.975) and runs
batches of 16 in about 0.57x fp32's time (blockwise: about 1.1x), a lone query in
about 0.75x. :data:`METHODS` is the order ``export --int8`` tries them in
(``auto``): the first copy that passes the tower's int8 gate is published, so
the CLIP image tower keeps dynamic (the faster there), MiniLM gets smooth, and
a tower that smoothing cannot save falls back to blockwise.
Graphs with untyped tensors are quantized with ``DefaultTensorType`` float.
:func:`quantized_ops` counts the integer ops of a result, so a copy that
quantized nothing is never published as int8.
"""
from __future__ import annotations

import tempfile
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

OP_TYPES = ["MatMul", "Gemm"]
_FLOAT = 1  # onnx.TensorProto.FLOAT
INTEGER_OPS = ("MatMulNBits", "MatMulInteger", "QLinearMatMul", "DynamicQuantizeLinear", "QuantizeLinear", "QGemm",
               "MatMulIntegerToFloat", "DynamicQuantizeMatMul")


def _quantize_dynamic(source: Path, out: Path, ops: Sequence[str], float_nodes: Sequence[str] = ()) -> None:
    """onnxruntime's dynamic quantization of ``ops`` (but ``float_nodes``) in ``source``, as :func:`dynamic`
    and :func:`smooth` run it."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    # reduce_range: 7-bit weights. On x86 CPUs without VNNI (AVX2 only) onnxruntime's u8 x s8 products
    # saturate in 16 bits with full-range weights, and the same model's parity drops on those machines
    # alone; with 7 bits it is the same everywhere.
    quantize_dynamic(str(source), str(out), per_channel=True, reduce_range=True, weight_type=QuantType.QInt8,
                     op_types_to_quantize=list(ops), nodes_to_exclude=list(float_nodes),
                     extra_options={"DefaultTensorType": _FLOAT})


def dynamic(fp32: Path, out: Path) -> dict:
    """Write the dynamic int8 copy of ``fp32`` to ``out``; returns what the manifest records of it."""
    _quantize_dynamic(fp32, out, OP_TYPES)
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


SMOOTH_ALPHA = 0.5
"""SmoothQuant's migration strength: how much of an input channel's range moves into the weights."""
SMOOTHED_OPS = ("MatMul", "Attention")  # ops whose input[1] is a constant [input channels, outputs] weight
GELUS = ("Gelu", "BiasGelu", "FastGelu", "QuickGelu")


def float_matmuls(graph) -> list[str]:
    """The MatMuls :func:`smooth` keeps in float: those fed by a GELU (see module doc)."""
    producer = {out: node.op_type for node in graph.node for out in node.output}
    return [node.name for node in graph.node if node.op_type == "MatMul" and producer.get(node.input[0]) in GELUS]


def smoothing_scales(activation_max: np.ndarray, weight_max: np.ndarray, alpha: float = SMOOTH_ALPHA) -> np.ndarray:
    """Per input channel: ``max|x|^alpha / max|W|^(1 - alpha)``; 1 where either is 0 (nothing to move). Pure."""
    a, w = np.asarray(activation_max, np.float64), np.asarray(weight_max, np.float64)
    live = (a > 0) & (w > 0)
    scales = np.ones_like(a)
    scales[live] = a[live] ** alpha / w[live] ** (1 - alpha)
    return scales.astype(np.float32)


def activation_ranges(model, names: list[str], calibration: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Per channel (last axis) ``max|x|`` of each tensor in ``names`` over the calibration feeds."""
    import onnx

    from mmsearch.core import onnx as sessions

    if not calibration:
        raise ValueError("smooth quantization needs at least one calibration input")
    probe = onnx.ModelProto()
    probe.CopyFrom(model)
    outputs = {o.name for o in probe.graph.output}
    probe.graph.output.extend(onnx.helper.make_tensor_value_info(name, _FLOAT, None) for name in names
                              if name not in outputs)
    ranges: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="mmsearch-smooth-") as tmp:
        onnx.save(probe, str(Path(tmp) / "probe.onnx"))
        session = sessions.session(Path(tmp) / "probe.onnx")
        wanted = {i.name for i in session.get_inputs()}
        for feed in calibration:
            for name, value in zip(names, session.run(names, {k: v for k, v in feed.items() if k in wanted})):
                top = np.abs(value.reshape(-1, value.shape[-1])).max(axis=0)
                ranges[name] = np.maximum(ranges[name], top) if name in ranges else top
    return ranges


def migrate(model, calibration: list[Mapping[str, np.ndarray]]) -> list[str]:
    """SmoothQuant's migration on ``model`` (an ONNX ModelProto, changed in place; it computes the same in
    float): the inputs of MatMul and Attention nodes with their own constant weight, each divided by its
    smoothing scales (one ``Mul``), the weight rows multiplied by them. The MatMuls fed by a GELU are left as
    they are; returns their names (see module doc)."""
    import onnx
    from onnx import numpy_helper

    graph = model.graph
    weights = {t.name: t for t in graph.initializer}
    kept = float_matmuls(graph)
    uses = Counter(name for node in graph.node for name in node.input)
    consumers: dict[str, list] = {}
    for node in graph.node:
        if (node.op_type in SMOOTHED_OPS and node.name not in kept and len(node.input) > 1
                and node.input[1] in weights and uses[node.input[1]] == 1
                and len(weights[node.input[1]].dims) == 2 and weights[node.input[1]].data_type == _FLOAT):
            consumers.setdefault(node.input[0], []).append(node)
    ranges = activation_ranges(model, list(consumers), calibration)
    muls = {}
    for x, nodes in consumers.items():
        arrays = [numpy_helper.to_array(weights[n.input[1]]) for n in nodes]
        scales = smoothing_scales(ranges[x], np.max([np.abs(w).max(axis=1) for w in arrays], axis=0))
        for node, w in zip(nodes, arrays):
            weights[node.input[1]].CopyFrom(numpy_helper.from_array(w * scales[:, None], node.input[1]))
            node.input[0] = f"{x}_smoothed"
        graph.initializer.append(numpy_helper.from_array(1 / scales, f"{x}_smoothing"))
        muls[id(nodes[0])] = onnx.helper.make_node("Mul", [x, f"{x}_smoothing"], [f"{x}_smoothed"], name=f"{x}_smooth")
    nodes = []
    for node in graph.node:  # each Mul right before the first node that reads it: the order stays topological
        if id(node) in muls:
            nodes.append(muls[id(node)])
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    return kept


def smooth(fp32: Path, out: Path, calibration: Iterable[Mapping[str, np.ndarray]]) -> dict:
    """Write the smoothed dynamic int8 copy of ``fp32`` to ``out`` (see module doc), its smoothing scales
    calibrated on ``calibration`` (feeds of one input each); returns its record."""
    import onnx

    model = onnx.load(str(fp32))
    feeds = list(calibration)
    kept = migrate(model, feeds)
    with tempfile.TemporaryDirectory(prefix="mmsearch-smooth-") as tmp:
        onnx.save(model, str(Path(tmp) / "smoothed.onnx"))
        _quantize_dynamic(Path(tmp) / "smoothed.onnx", out, list(SMOOTHED_OPS), kept)
    return {"method": "smooth", "weights": f"int8 per channel, 7-bit range, smoothed (alpha {SMOOTH_ALPHA})",
            "activations": "uint8 per batch, at run time, divided by per-channel smoothing scales",
            "ops": list(SMOOTHED_OPS), "float_matmuls": len(kept), "calibration_inputs": len(feeds),
            "quantized_ops": quantized_ops(out)}


METHODS = ("dynamic", "smooth", "blockwise")
"""What ``export --int8`` tries, in this order (``auto``); ``--int8-method`` names one."""


def quantize(method: str, fp32: Path, out: Path,
             calibration: Callable[[], Iterable[Mapping[str, np.ndarray]]] = lambda: ()) -> dict:
    """The ``method`` (one of :data:`METHODS`) int8 copy of ``fp32`` at ``out``; its record. ``calibration()``
    gives the feeds :func:`smooth` calibrates on (called only for it)."""
    if method not in METHODS:
        raise ValueError(f"int8 method {method!r}: expected one of {', '.join(METHODS)}")
    if method == "smooth":
        return smooth(fp32, out, calibration())
    return {"dynamic": dynamic, "blockwise": blockwise}[method](fp32, out)


def quantized_ops(path: Path) -> int:
    """How many integer (quantization) ops the model at ``path`` holds."""
    import onnx

    return sum(node.op_type in INTEGER_OPS for node in onnx.load(str(path), load_external_data=False).graph.node)
