"""Queries to model inputs through the preprocess service (:class:`PreprocessClient`).

Concurrent text queries for one model share one Tokenize call (a
:class:`~mmsearch.services.serving.backends.batching.MicroBatcher`); each gets its own row,
cut to its own tokens (trailing padding dropped, so the encoder's batcher
re-pads only to the longest of the queries it merges in one length bucket). When the service
refuses one text of a merged batch, each text is sent on its own, so only
that request fails. Image queries go one PreprocessImages call each.

gRPC failures become serving's backend errors: INVALID_ARGUMENT ->
BadInput, DEADLINE_EXCEEDED -> TimeoutError, NOT_FOUND/FAILED_PRECONDITION
-> Mismatch, anything else -> Unavailable naming the service's address.
"""
from __future__ import annotations

import asyncio

import grpc
import numpy as np

from mmsearch.core.codec import TensorError
from mmsearch.services.preprocess.client import PreprocessClient
from mmsearch.services.serving import metrics
from mmsearch.services.serving.backends.batching import MicroBatcher
from mmsearch.services.serving.errors import BadInput, Mismatch, Unavailable

Code = grpc.StatusCode


def token_rows(ids: np.ndarray, mask: np.ndarray, n: int) -> list[dict[str, np.ndarray]]:
    """One {input_ids, attention_mask} per text, each cut to its own tokens (trailing padding dropped). Pure."""
    if ids.shape[0] != n or mask.shape != ids.shape:
        raise TensorError(f"Tokenize answered shapes {ids.shape}/{mask.shape} for {n} texts")
    rows = []
    for i in range(n):
        attended = np.flatnonzero(mask[i])
        end = int(attended[-1]) + 1 if attended.size else ids.shape[1]
        rows.append({"input_ids": ids[i:i + 1, :end], "attention_mask": mask[i:i + 1, :end]})
    return rows


class Preprocessor:
    def __init__(self, client: PreprocessClient, *, batch_max_size: int = 32):
        self.client = client
        self._batch_max_size = batch_max_size
        self._tokenizers: dict[str, MicroBatcher] = {}

    def _error(self, exc: grpc.aio.AioRpcError) -> Exception:
        code = exc.code()
        if code == Code.INVALID_ARGUMENT:
            return BadInput(exc.details() or "bad query")
        if code == Code.DEADLINE_EXCEEDED:
            return TimeoutError(exc.details() or "deadline exceeded")
        if code in (Code.NOT_FOUND, Code.FAILED_PRECONDITION):
            return Mismatch(exc.details() or code.name)
        return Unavailable(f"preprocess service at {self.client.address}: {code.name}: {exc.details()}")

    def _batcher(self, model: str) -> MicroBatcher:
        batcher = self._tokenizers.get(model)
        if batcher is None:
            async def run(inputs: dict[str, np.ndarray]) -> list:
                texts = [str(t) for t in inputs["text"]]
                timeout = float(inputs["timeout"].max())
                try:
                    return token_rows(*await self.client.tokenize(model, texts, timeout=timeout), len(texts))
                except grpc.aio.AioRpcError as exc:
                    if exc.code() != Code.INVALID_ARGUMENT or len(texts) == 1:
                        raise
                # One text of the batch was refused: each on its own, so only that request fails.
                results = await asyncio.gather(*(self.client.tokenize(model, [t], timeout=timeout) for t in texts),
                                               return_exceptions=True)
                return [r if isinstance(r, BaseException) else token_rows(*r, 1)[0] for r in results]

            batcher = self._tokenizers[model] = MicroBatcher(
                run, max_size=self._batch_max_size, on_batch=metrics.BATCH_SIZE.labels("preprocess", model).observe)
        return batcher

    async def text(self, model: str, text: str, timeout: float) -> dict[str, np.ndarray]:
        try:
            row = (await self._batcher(model).submit(
                {"text": np.array([text], dtype=object), "timeout": np.array([[timeout]])}))[0]
            if isinstance(row, BaseException):
                raise row
            return row
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        except TensorError as exc:
            raise Unavailable(f"preprocess service at {self.client.address}: undecodable answer: {exc}") from None

    async def image(self, model: str, image: bytes, timeout: float) -> dict[str, np.ndarray]:
        try:
            return {"pixel_values": await self.client.preprocess_images(model, [image], timeout=timeout)}
        except grpc.aio.AioRpcError as exc:
            raise self._error(exc) from None
        except TensorError as exc:
            raise Unavailable(f"preprocess service at {self.client.address}: undecodable answer: {exc}") from None

    async def models(self, timeout: float) -> set[str]:
        """The models the service has loaded; Unavailable when it does not answer."""
        try:
            return {m.name for m in await self.client.list_models(timeout=timeout)}
        except grpc.aio.AioRpcError as exc:
            raise Unavailable(f"preprocess service at {self.client.address} does not answer: "
                              f"{exc.code().name}") from None

    async def close(self) -> None:
        for batcher in self._tokenizers.values():
            await batcher.close()
        self._tokenizers.clear()
        await self.client.close()
