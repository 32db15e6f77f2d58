"""Request limits, defined once: web, serving and preprocess all read these fields.

Each service's settings class has a ``limits`` group of this type (serving and
preprocess add their own), so one ``MMSEARCH_MAX_...`` variable means the same
number in every layer and the web API refuses exactly what serving (and
preprocess) would refuse, with the same message numbers. The chart sets them
once for the whole release.
"""
from __future__ import annotations

from mmsearch.core.settings import Group, setting

MiB = 1024 * 1024


class RequestLimits(Group):
    """Bounds on what one query may carry (``MMSEARCH_MAX_QUERY_CHARS`` ...)."""

    env_prefix = "MAX_"

    query_chars: int = setting(1000, ge=1, le=100_000, unit="characters", description="Longest text query.")
    image_bytes: int = setting(8 * MiB, ge=1024, le=64 * MiB, unit="bytes", description="Largest encoded image query.")
    image_pixels: int = setting(
        40_000_000, ge=1, unit="pixels",
        description="Most pixels (width x height) an image may declare; guards decompression bombs.")
    image_aspect_ratio: float = setting(
        50.0, ge=1, le=10_000, advanced=True,
        description="Most an image's long side may exceed its short side (50: 50 times). Resizing the short side "
                    "to the model's size multiplies the long one, so a thin image would become a huge resize; "
                    "CLIP's centre crop keeps only the middle of such an image anyway.")
    top_k: int = setting(100, ge=1, le=10_000, unit="results", description="Largest number of results one search may ask for.")
    user_id_chars: int = setting(128, ge=1, le=4096, unit="characters",
                                 description="Longest user id (the A/B bucketing key) a search may carry.")
