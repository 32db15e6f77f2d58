"""gRPC ``PreprocessService``: thin handlers over pure request functions.

Caller mistakes (unknown model, empty or oversize batch, text too long,
undecodable or oversize image, unsupported dtype) answer ``INVALID_ARGUMENT``
with a message that starts with the offending field; requests that arrive
before the models are loaded answer ``UNAVAILABLE``.

Tokenization runs on the event loop: it is microseconds for a query and
bounded by the batch and text limits, and a thread hop would double the
latency of the common single-query call. Image decoding and resizing run on
a thread pool, one image per task (Pillow releases the GIL).
"""
from __future__ import annotations

import asyncio
from concurrent.futures import Executor
from typing import Sequence

import grpc
import numpy as np

from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc, tensor_pb2
from mmsearch.core.codec import dtype_name, to_tensor
from mmsearch.core.errors import clipped, shown
from mmsearch.core.image_preprocessing import ImageInputError, decode
from mmsearch.services.preprocess.models import PreprocessModel
from mmsearch.services.preprocess.settings import PreprocessSettings

SERVICE_NAME = preprocess_pb2.DESCRIPTOR.services_by_name["PreprocessService"].full_name
TOKEN_DTYPES = {tensor_pb2.DTYPE_UNSPECIFIED: np.int64, tensor_pb2.DTYPE_INT64: np.int64,
                tensor_pb2.DTYPE_INT32: np.int32}
PIXEL_DTYPES = {tensor_pb2.DTYPE_UNSPECIFIED: np.float32, tensor_pb2.DTYPE_FLOAT32: np.float32,
                tensor_pb2.DTYPE_FLOAT16: np.float16}


class RequestError(ValueError):
    """A caller mistake; the message starts with the field it is about."""


def output_dtype(code: int, allowed: dict[int, type], tensor: str) -> type:
    if code not in allowed:
        names = " or ".join(dtype_name(c) for c in allowed if c != tensor_pb2.DTYPE_UNSPECIFIED)
        raise RequestError(f"dtype {dtype_name(code)} is not supported for {tensor}: use {names}")
    return allowed[code]


def check_batch(items: Sequence, field: str, limit: int) -> None:
    if not items:
        raise RequestError(f"{field} is empty: send at least one item")
    if len(items) > limit:
        raise RequestError(
            f"{field} has {len(items)} items, over the limit of {limit} (MMSEARCH_MAX_BATCH_SIZE): split the batch"
        )


def find_model(models: dict[str, PreprocessModel], name: str, capability: str) -> PreprocessModel:
    model = models.get(name)
    if model is None:
        known = ", ".join(sorted(models)) or "none"
        raise RequestError(f"model {shown(name)} is unknown: loaded models are {known}")
    if capability == "text" and model.tokenizer is None:
        raise RequestError(f"model {name!r} has no tokenizer (an image model): use PreprocessImages or a text model")
    if capability == "image" and model.images is None:
        raise RequestError(f"model {name!r} has no image processor (a text model): use Tokenize or an image model")
    return model


def tokenize(models: dict[str, PreprocessModel], request: preprocess_pb2.TokenizeRequest,
             settings: PreprocessSettings) -> preprocess_pb2.TokenizeResponse:
    """Validate a TokenizeRequest and tokenize it (pure; raises RequestError)."""
    model = find_model(models, request.model, "text")
    dtype = output_dtype(request.dtype, TOKEN_DTYPES, "input_ids/attention_mask")
    texts = list(request.texts)
    check_batch(texts, "texts", settings.limits.batch_size)
    for index, text in enumerate(texts):
        if len(text) > settings.limits.query_chars:
            raise RequestError(
                f"texts[{index}] has {len(text)} characters, over the limit of {settings.limits.query_chars} "
                "(MMSEARCH_MAX_QUERY_CHARS): shorten it"
            )
    ids, mask = model.tokenizer.encode(texts)  # type: ignore[union-attr]
    return preprocess_pb2.TokenizeResponse(
        input_ids=to_tensor(ids.astype(dtype, copy=False)), attention_mask=to_tensor(mask.astype(dtype, copy=False))
    )


async def preprocess_images(models: dict[str, PreprocessModel], request: preprocess_pb2.PreprocessImagesRequest,
                            settings: PreprocessSettings, executor: Executor) -> preprocess_pb2.PreprocessImagesResponse:
    """Validate a PreprocessImagesRequest, decode and preprocess its images on ``executor``."""
    model = find_model(models, request.model, "image")
    dtype = output_dtype(request.dtype, PIXEL_DTYPES, "pixel_values")
    images = list(request.images)
    check_batch(images, "images", settings.limits.batch_size)
    processor = model.images
    out = np.empty((len(images), 3, *processor.output_size), dtype=np.float32)  # type: ignore[union-attr]

    def one(index: int) -> None:
        image = decode(images[index], index, settings.limits.image_bytes, settings.limits.image_pixels,
                       settings.limits.image_aspect_ratio)
        processor.process_into(image, out[index], max_pixels=settings.limits.image_pixels,  # type: ignore[union-attr]
                               field=f"images[{index}]")

    loop = asyncio.get_running_loop()
    results = await asyncio.gather(*(loop.run_in_executor(executor, one, i) for i in range(len(images))),
                                   return_exceptions=True)
    for index, result in enumerate(results):
        if isinstance(result, ImageInputError):
            raise RequestError(str(result))
        if isinstance(result, Exception):  # Pillow's conversions raise many kinds for odd inputs
            raise RequestError(f"images[{index}] cannot be preprocessed ({type(result).__name__}: "
                               f"{shown(str(result), 200)})")
        if isinstance(result, BaseException):
            raise result
    return preprocess_pb2.PreprocessImagesResponse(pixel_values=to_tensor(out.astype(dtype, copy=False)))


def check_response_fits(settings: PreprocessSettings, models: dict[str, PreprocessModel]) -> None:
    """Fail fast when a full batch of float32 pixel_values could not be sent in one gRPC message."""
    for model in models.values():
        if model.images is None:
            continue
        height, width = model.images.output_size
        needed = settings.limits.batch_size * 3 * height * width * 4 + 1024
        if needed > settings.max_message_bytes:
            raise ValueError(
                f"model {model.name!r}: a batch of {settings.limits.batch_size} images of {height}x{width} needs "
                f"{needed} bytes, over MMSEARCH_MAX_MESSAGE_BYTES={settings.max_message_bytes}: raise it or lower "
                "MMSEARCH_MAX_BATCH_SIZE"
            )


def list_models(models: dict[str, PreprocessModel]) -> preprocess_pb2.ListModelsResponse:
    return preprocess_pb2.ListModelsResponse(models=[
        preprocess_pb2.ModelInfo(
            name=m.name, text=m.tokenizer is not None, image=m.images is not None,
            max_length=(m.tokenizer.max_length or 0) if m.tokenizer else 0,
            image_size=m.images.output_size[0] if m.images else 0,
        )
        for m in sorted(models.values(), key=lambda m: m.name)
    ])


class PreprocessServicer(preprocess_pb2_grpc.PreprocessServiceServicer):
    """The gRPC handlers; ``models`` is None until :meth:`set_models` (UNAVAILABLE meanwhile)."""

    def __init__(self, settings: PreprocessSettings, executor: Executor):
        self.settings = settings
        self.executor = executor
        self.models: dict[str, PreprocessModel] | None = None

    def set_models(self, models: dict[str, PreprocessModel]) -> None:
        self.models = models

    async def _loaded(self, context: grpc.aio.ServicerContext) -> dict[str, PreprocessModel]:
        if self.models is None:
            await context.abort(grpc.StatusCode.UNAVAILABLE, "models are still loading: retry shortly")
        return self.models  # type: ignore[return-value]

    async def Tokenize(self, request, context):
        models = await self._loaded(context)
        try:
            return tokenize(models, request, self.settings)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, clipped(str(exc)))

    async def PreprocessImages(self, request, context):
        models = await self._loaded(context)
        try:
            return await preprocess_images(models, request, self.settings, self.executor)
        except RequestError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, clipped(str(exc)))

    async def ListModels(self, request, context):
        return list_models(await self._loaded(context))


def register(servicer: PreprocessServicer):
    """A ``mmsearch.services.runtime.server`` registrar for the preprocess service."""

    def add(server: grpc.aio.Server) -> list[str]:
        preprocess_pb2_grpc.add_PreprocessServiceServicer_to_server(servicer, server)
        return [SERVICE_NAME]

    return add
