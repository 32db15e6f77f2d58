"""Request limits, defined once: web, serving and preprocess all read these fields.

Each service's settings class inherits :class:`RequestLimits`, so one
``MMSEARCH_MAX_...`` variable means the same number in every layer and the
web API refuses exactly what serving (and preprocess) would refuse, with
the same message numbers. The chart sets them once for the whole release.
"""
from __future__ import annotations

from pydantic import Field

from mmsearch.core.settings import BaseConfig

MiB = 1024 * 1024


class RequestLimits(BaseConfig):
    """Bounds on what one query may carry (``MMSEARCH_MAX_QUERY_CHARS`` ...)."""

    max_query_chars: int = Field(1000, ge=1, le=100_000, description="Longest text query, in characters.")
    max_image_bytes: int = Field(8 * MiB, ge=1024, le=64 * MiB, description="Largest encoded image query, in bytes.")
    max_image_pixels: int = Field(
        40_000_000, ge=1, description="Most pixels (width x height) an image may declare; guards decompression bombs.")
    max_image_aspect_ratio: float = Field(
        50.0, ge=1, le=10_000,
        description="Most an image's long side may exceed its short side (50: 50 times). Resizing the short side "
                    "to the model's size multiplies the long one: a 4 x 10,000,000 PNG of 49 KB would become a "
                    "resize to hundreds of GB; CLIP's centre crop keeps only the middle of such an image anyway.")
    max_top_k: int = Field(100, ge=1, le=10_000, description="Largest number of results one search may ask for.")
