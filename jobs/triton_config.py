"""``config.pbtxt`` for a Triton model repository (pure text building, no I/O).

Follows Triton's model configuration (``ModelConfig`` in model_config.proto):
``backend: "onnxruntime"``, ``max_batch_size`` > 0 so the first dimension is
the implicit batch dimension (hence ``dims`` exclude it: ``[-1]`` for a
variable sequence length, ``[3, H, W]`` for pixels, ``[dim]`` for the
embedding), ``dynamic_batching`` with a queue delay, and ``instance_group``.
Triton's dynamic batcher only batches requests whose non-batch shapes agree,
so text requests of different lengths run as separate batches; the serving
client pads a batch to its longest text before sending it.
"""
from __future__ import annotations

from dataclasses import dataclass

DTYPES = {"int64": "TYPE_INT64", "int32": "TYPE_INT32", "float32": "TYPE_FP32", "float16": "TYPE_FP16"}
KINDS = {"auto": "KIND_AUTO", "cpu": "KIND_CPU", "gpu": "KIND_GPU"}


@dataclass(frozen=True)
class Tensor:
    name: str
    dtype: str  # a key of DTYPES
    dims: tuple[int, ...]  # without the batch dimension; -1 = variable


def _tensor(t: Tensor) -> str:
    if t.dtype not in DTYPES:
        raise ValueError(f"tensor {t.name!r}: dtype {t.dtype!r} not one of {sorted(DTYPES)}")
    dims = ", ".join(str(d) for d in t.dims)
    return f'  {{\n    name: "{t.name}"\n    data_type: {DTYPES[t.dtype]}\n    dims: [ {dims} ]\n  }}'


def build_config(name: str, inputs: list[Tensor], outputs: list[Tensor], *, max_batch_size: int = 64,
                 max_queue_delay_us: int = 100, instance_count: int = 1, instance_kind: str = "auto") -> str:
    """The text of ``config.pbtxt`` for an ONNX model served by Triton's onnxruntime backend."""
    if max_batch_size < 1:
        raise ValueError(f"--triton-max-batch-size must be >= 1, got {max_batch_size}")
    if instance_count < 1:
        raise ValueError(f"--instance-count must be >= 1, got {instance_count}")
    if instance_kind not in KINDS:
        raise ValueError(f"--instance-kind {instance_kind!r}: expected one of {sorted(KINDS)}")
    if max_queue_delay_us < 0:
        raise ValueError(f"--max-queue-delay-us must be >= 0, got {max_queue_delay_us}")
    return "\n".join([
        f'name: "{name}"',
        'backend: "onnxruntime"',
        f"max_batch_size: {max_batch_size}",
        "input [\n" + ",\n".join(_tensor(t) for t in inputs) + "\n]",
        "output [\n" + ",\n".join(_tensor(t) for t in outputs) + "\n]",
        f"dynamic_batching {{\n  max_queue_delay_microseconds: {max_queue_delay_us}\n}}",
        f"instance_group [\n  {{\n    count: {instance_count}\n    kind: {KINDS[instance_kind]}\n  }}\n]",
        "",
    ])
