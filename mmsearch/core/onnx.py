"""The one onnxruntime session factory: execution providers and threads, for every caller.

Serving's embedded encoder, encode's document towers and export's parity
gate all build their sessions here, so a device choice or a thread setting
means the same everywhere.

- ``device``: ``cpu``; ``cuda`` (refused with a clear message when this
  onnxruntime has no CUDA execution provider); ``auto`` (CUDA when present).
- ``intra_op_threads``: threads of one call (0: onnxruntime's default, one
  per core); inter-op threads stay 1 (our graphs are sequential).
- ``spinning``: whether idle intra-op threads spin-wait (onnxruntime's
  default: on). Only matters with more than one intra-op thread.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from mmsearch.core.errors import MmsearchError

DEVICES = ("auto", "cpu", "cuda")
# ONNX tensor types -> numpy, for feeding a session the dtypes it declares.
NUMPY_TYPES = {
    "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(float)": np.float32,
    "tensor(float16)": np.float16, "tensor(uint8)": np.uint8,
}


class OnnxError(MmsearchError):
    """A device or model that onnxruntime cannot use here."""


def providers(device: str = "cpu") -> list[str]:
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device == "cpu":
        return ["CPUExecutionProvider"]
    if device == "cuda":
        if "CUDAExecutionProvider" not in available:
            raise OnnxError(f"--device cuda: onnxruntime has no CUDA execution provider here (available: "
                            f"{available}); install onnxruntime-gpu on a GPU node or use --device auto")
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if device != "auto":
        raise OnnxError(f"--device {device!r}: expected one of {', '.join(DEVICES)}")
    return (["CUDAExecutionProvider"] if "CUDAExecutionProvider" in available else []) + ["CPUExecutionProvider"]


def session(path: str | Path, *, device: str = "cpu", intra_op_threads: int = 0, spinning: bool = True):
    """An ``onnxruntime.InferenceSession`` on ``path`` with all graph optimisations."""
    import onnxruntime as ort

    if intra_op_threads < 0:
        raise OnnxError(f"intra-op threads must be >= 0, got {intra_op_threads}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    try:
        return ort.InferenceSession(str(path), options, providers=providers(device))
    except OnnxError:
        raise
    except Exception as exc:  # onnxruntime raises its own classes for unreadable or invalid models
        raise OnnxError(f"onnxruntime cannot load {path}: {exc}") from None


def input_types(sess) -> dict[str, type]:
    """Input name -> the numpy dtype the session declares for it."""
    return {i.name: NUMPY_TYPES.get(i.type, np.float32) for i in sess.get_inputs()}


def feed(types: dict[str, type], inputs) -> dict[str, np.ndarray]:
    """The session feed from ``inputs``: each declared input, contiguous, in its declared dtype.
    KeyError naming the missing inputs when ``inputs`` lacks one."""
    missing = sorted(set(types) - set(inputs))
    if missing:
        raise KeyError(f"the model needs inputs {missing}; got {sorted(inputs)}")
    return {name: np.ascontiguousarray(inputs[name], dtype=dtype) for name, dtype in types.items()}
