"""numpy <-> Tensor: little-endian raw bytes plus dtype and shape, and clear errors."""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.v1 import tensor_pb2
from mmsearch.core.codec import TensorError, from_tensor, to_tensor


@pytest.mark.parametrize("dtype, code", [
    ("float32", tensor_pb2.DTYPE_FLOAT32), ("float16", tensor_pb2.DTYPE_FLOAT16), ("int64", tensor_pb2.DTYPE_INT64),
    ("int32", tensor_pb2.DTYPE_INT32), ("uint8", tensor_pb2.DTYPE_UINT8),
])
@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 4, 1), (0, 7), ()])
def test_round_trip(dtype, code, shape):
    array = (np.arange(int(np.prod(shape)), dtype=np.float64) * 1.5 - 3).astype(dtype).reshape(shape)
    tensor = to_tensor(array)
    assert tensor.dtype == code and list(tensor.shape) == list(shape)
    back = from_tensor(tensor_pb2.Tensor.FromString(tensor.SerializeToString()))
    assert back.dtype == np.dtype(dtype) and back.shape == shape
    np.testing.assert_array_equal(back, array)


def test_wire_bytes_are_little_endian_and_big_endian_input_is_converted():
    big = np.array([1, 256], dtype=">i4")
    tensor = to_tensor(big)
    assert tensor.data == b"\x01\x00\x00\x00\x00\x01\x00\x00"
    np.testing.assert_array_equal(from_tensor(tensor), [1, 256])


def test_non_contiguous_input():
    array = np.arange(12, dtype=np.float32).reshape(3, 4).T
    np.testing.assert_array_equal(from_tensor(to_tensor(array)), array)


def test_unsupported_array_dtype():
    with pytest.raises(TensorError, match="dtype bool is not supported"):
        to_tensor(np.array([True]))


@pytest.mark.parametrize("tensor, message", [
    (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_UNSPECIFIED, shape=[1], data=b"\0" * 4), "ids.dtype DTYPE_UNSPECIFIED"),
    (tensor_pb2.Tensor(dtype=42, shape=[1], data=b"\0" * 4), "ids.dtype 42"),
    (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_INT64, shape=[2, 2], data=b"\0" * 8), "ids.data has 8 bytes"),
    (tensor_pb2.Tensor(dtype=tensor_pb2.DTYPE_INT64, shape=[-1], data=b""), "negative dimension"),
])
def test_bad_tensor_names_the_field(tensor, message):
    with pytest.raises(TensorError, match=message.replace(".", r"\.")):
        from_tensor(tensor, "ids")
