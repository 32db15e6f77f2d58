"""Settings of the preprocess service (``MMSEARCH_*`` environment variables).

``MMSEARCH_MODELS`` is the model registry: a JSON object mapping a model name
to its model folder (``REPO/NAME`` as the export job writes it: a local path,
``file://`` or ``s3://``). A folder with ``tokenizer.json`` serves Tokenize; one
with ``preprocessor_config.json`` serves PreprocessImages (a CLIP export has
``NAME`` for text and ``NAME-image`` for images).
"""
from __future__ import annotations

import os

from pydantic import Field, field_validator

from mmsearch.core.limits import RequestLimits
from mmsearch.services.runtime.settings import GrpcSettings


class PreprocessSettings(GrpcSettings, RequestLimits):
    """What the preprocess service reads; limits (shared with serving and web) bound the work one request can cause."""

    port: int = Field(50051, ge=0, le=65535, description="gRPC port; 0 picks a free one.")
    models: dict[str, str] = Field(
        ..., description='Model registry, JSON: {"minilm": "s3://models/minilm", "clip-image": "/repo/clip-image"}.'
    )
    max_batch_size: int = Field(64, ge=1, le=4096, description="Most texts or images in one request.")
    max_message_bytes: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="gRPC max message size; a full batch of float32 224x224 images is 38.5 MB, so larger than the default.",
    )
    image_threads: int = Field(
        default_factory=lambda: min(4, os.cpu_count() or 1), ge=1, le=64,
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
