"""Settings of the preprocess service (``MMSEARCH_*`` environment variables).

``MMSEARCH_MODELS`` is the model registry: a JSON object mapping a model name
to its model folder (``REPO/NAME`` as the export job writes it: a local path,
``file://`` or ``s3://``). A folder with ``tokenizer.json`` serves Tokenize; one
with ``preprocessor_config.json`` serves PreprocessImages (a CLIP export has
``NAME`` for text and ``NAME-image`` for images).
"""
from __future__ import annotations

import os

from pydantic import field_validator

from mmsearch.core.limits import RequestLimits
from mmsearch.core.settings import setting
from mmsearch.services.runtime.settings import GrpcSettings


class PreprocessLimits(RequestLimits):
    """The request limits (shared with serving and web) and the batch a request may carry."""

    batch_size: int = setting(64, ge=1, le=4096, unit="items", description="Most texts or images in one request.")


class PreprocessSettings(GrpcSettings):
    """What the preprocess service reads; ``limits`` bound the work one request can cause."""

    port: int = setting(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    limits: PreprocessLimits = setting(default_factory=PreprocessLimits)
    models: dict[str, str] = setting(
        ..., description='Model registry, JSON: {"minilm": "s3://models/minilm", "clip-image": "/repo/clip-image"}.'
    )
    max_message_bytes: int = setting(
        64 * 1024 * 1024, ge=1024, unit="bytes", advanced=True,
        description="gRPC max message size; larger than the other services' because a full batch of float32 "
                    "224x224 images must fit.",
    )
    image_threads: int = setting(
        default_factory=lambda: min(4, os.cpu_count() or 1), ge=1, le=64, advanced=True,
        shown_default="min(4, CPU cores)", unit="threads",
        description="Threads decoding and resizing the images of a batch (Pillow releases the GIL).",
    )

    @field_validator("models")
    @classmethod
    def _registry_not_empty(cls, value: dict[str, str]) -> dict[str, str]:
        if not value:
            raise ValueError('the registry is empty: give at least one model, e.g. {"minilm": "/models/minilm"}')
        for name, uri in value.items():
            if not name.strip() or not str(uri).strip():
                raise ValueError(f"model {name!r} needs a non-empty name and folder URI (got {uri!r})")
        return value
