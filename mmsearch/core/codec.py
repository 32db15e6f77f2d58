"""numpy <-> ``mmsearch.v1.Tensor``: raw little-endian bytes plus dtype and shape."""
from __future__ import annotations

import numpy as np

from mmsearch.v1 import tensor_pb2

DTYPES: dict[int, np.dtype] = {
    tensor_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
    tensor_pb2.DTYPE_FLOAT16: np.dtype("<f2"),
    tensor_pb2.DTYPE_INT64: np.dtype("<i8"),
    tensor_pb2.DTYPE_INT32: np.dtype("<i4"),
    tensor_pb2.DTYPE_UINT8: np.dtype("u1"),
}
_BY_KIND = {dt.newbyteorder("=") if dt.byteorder != "|" else dt: code for code, dt in DTYPES.items()}


class TensorError(ValueError):
    """A Tensor message that cannot be decoded, or an array that cannot be encoded."""


def dtype_name(code: int) -> str:
    return tensor_pb2.DType.Name(code) if code in tensor_pb2.DType.values() else str(code)


def to_tensor(array: np.ndarray) -> tensor_pb2.Tensor:
    """Encode an array (any byte order) as a little-endian C-order Tensor."""
    array = np.asarray(array)
    native = array.dtype.newbyteorder("=") if array.dtype.byteorder not in ("|", "=") else array.dtype
    code = _BY_KIND.get(native)
    if code is None:
        raise TensorError(f"dtype {array.dtype} is not supported; use one of "
                          + ", ".join(str(d) for d in DTYPES.values()))
    data = np.ascontiguousarray(array, dtype=DTYPES[code]).tobytes()
    return tensor_pb2.Tensor(dtype=code, shape=list(array.shape), data=data)


def from_tensor(tensor: tensor_pb2.Tensor, field: str = "tensor") -> np.ndarray:
    """Decode a Tensor into a native-order array; errors name ``field``."""
    dt = DTYPES.get(tensor.dtype)
    if dt is None:
        raise TensorError(f"{field}.dtype {dtype_name(tensor.dtype)} is not supported")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise TensorError(f"{field}.shape {list(shape)} has a negative dimension")
    expected = int(np.prod(shape, dtype=np.int64)) * dt.itemsize
    if expected != len(tensor.data):
        raise TensorError(
            f"{field}.data has {len(tensor.data)} bytes but dtype {dtype_name(tensor.dtype)} "
            f"and shape {list(shape)} need {expected}"
        )
    return np.frombuffer(tensor.data, dtype=dt).reshape(shape).astype(dt.newbyteorder("="), copy=False)
