"""An asyncio client of the PreprocessService, for serving and tools.

It returns numpy arrays and leaves ``grpc.aio.AioRpcError`` to the caller
(its ``code()`` is INVALID_ARGUMENT for a bad query, UNAVAILABLE when the
service is down), so callers map errors into their own API.
"""
from __future__ import annotations

from typing import Sequence

import grpc
import numpy as np

from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc, tensor_pb2
from services.common.codec import from_tensor


class PreprocessClient:
    """``async with PreprocessClient("127.0.0.1:50051") as client: ids, mask = await client.tokenize(...)``."""

    def __init__(self, target: str, *, timeout: float = 5.0, max_message_bytes: int = 64 * 1024 * 1024):
        self.timeout = timeout
        self.channel = grpc.aio.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ])
        self.stub = preprocess_pb2_grpc.PreprocessServiceStub(self.channel)

    async def tokenize(self, model: str, texts: Sequence[str], *,
                       dtype: int = tensor_pb2.DTYPE_INT64) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), each [batch, longest], padded/truncated as the model expects."""
        response = await self.stub.Tokenize(
            preprocess_pb2.TokenizeRequest(model=model, texts=list(texts), dtype=dtype), timeout=self.timeout)
        return from_tensor(response.input_ids, "input_ids"), from_tensor(response.attention_mask, "attention_mask")

    async def preprocess_images(self, model: str, images: Sequence[bytes], *,
                                dtype: int = tensor_pb2.DTYPE_FLOAT32) -> np.ndarray:
        """pixel_values [batch, 3, H, W] for encoded images."""
        response = await self.stub.PreprocessImages(
            preprocess_pb2.PreprocessImagesRequest(model=model, images=list(images), dtype=dtype),
            timeout=self.timeout)
        return from_tensor(response.pixel_values, "pixel_values")

    async def list_models(self) -> list[preprocess_pb2.ModelInfo]:
        return list((await self.stub.ListModels(preprocess_pb2.ListModelsRequest(), timeout=self.timeout)).models)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "PreprocessClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
