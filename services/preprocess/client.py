"""The asyncio client of the PreprocessService: serving's, and anyone's who wants tensors.

It returns numpy arrays and leaves ``grpc.aio.AioRpcError`` to the caller
(its ``code()`` is INVALID_ARGUMENT for a bad query, UNAVAILABLE when the
service is down), so each caller maps errors into its own API. The channel
reconnects soon after the service comes back (short reconnect back-off);
every call takes its own timeout.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from mmsearch.core.channels import DEFAULT_MAX_MESSAGE_BYTES, channel_options
from mmsearch.core.codec import from_tensor
from mmsearch.services.runtime.tls import Tls, channel as tls_channel
from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc, tensor_pb2


class PreprocessClient:
    """``client = PreprocessClient("127.0.0.1:50051"); ids, mask = await client.tokenize(...)``."""

    def __init__(self, address: str, *, timeout: float = 5.0, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 tls: Tls | None = None):
        self.address = address
        self.timeout = timeout
        # TLS when tls.ca_file is set; the channel is built again when the certificate files change.
        self.channel = tls_channel(address, tls, channel_options(max_message_bytes), grace=timeout)

    @property
    def stub(self) -> preprocess_pb2_grpc.PreprocessServiceStub:
        return self.channel.stub(preprocess_pb2_grpc.PreprocessServiceStub)

    async def tokenize(self, model: str, texts: Sequence[str], *, timeout: float | None = None,
                       dtype: int = tensor_pb2.DTYPE_INT64) -> tuple[np.ndarray, np.ndarray]:
        """(input_ids, attention_mask), each [batch, longest], padded/truncated as the model expects."""
        response = await self.stub.Tokenize(
            preprocess_pb2.TokenizeRequest(model=model, texts=list(texts), dtype=dtype),
            timeout=timeout or self.timeout)
        return from_tensor(response.input_ids, "input_ids"), from_tensor(response.attention_mask, "attention_mask")

    async def preprocess_images(self, model: str, images: Sequence[bytes], *, timeout: float | None = None,
                                dtype: int = tensor_pb2.DTYPE_FLOAT32) -> np.ndarray:
        """pixel_values [batch, 3, H, W] for encoded images."""
        response = await self.stub.PreprocessImages(
            preprocess_pb2.PreprocessImagesRequest(model=model, images=list(images), dtype=dtype),
            timeout=timeout or self.timeout)
        return from_tensor(response.pixel_values, "pixel_values")

    async def list_models(self, *, timeout: float | None = None) -> list[preprocess_pb2.ModelInfo]:
        response = await self.stub.ListModels(preprocess_pb2.ListModelsRequest(), timeout=timeout or self.timeout)
        return list(response.models)

    async def close(self) -> None:
        await self.channel.close()

    async def __aenter__(self) -> "PreprocessClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.close()
