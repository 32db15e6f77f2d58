"""CLIP image preprocessing with Pillow + numpy (no torch), equal to Hugging Face's ``CLIPImageProcessor``.

Steps, as ``preprocessor_config.json`` sets them: RGB conversion (transparent
images are composited onto white, as transformers does; CMYK, L, P... are
converted by Pillow), resize (shortest side, or to a fixed height x width)
with the configured Pillow filter (bicubic for CLIP), centre crop, rescale and
normalise. The last two are one lookup table per channel from the uint8 pixel
value to its float32 result, computed with transformers' own arithmetic
(uint8 -> float64 * rescale_factor -> float32, then (x - mean) / std in
float32), so the output is bit-identical to the reference and much faster.

Decisions: images are decoded as ``PIL.Image.open`` sees them, first frame of
an animation, no EXIF rotation (the reference applies none either, so
offline and online vectors agree). Limits are checked before any pixel is
decoded: encoded size, then the declared width x height (decompression bombs)
and aspect ratio; and the output of the resize step is bounded before it runs
(a 100 x 400,000 image of 39 KB passed the pixel guard, then its resize to a
224-pixel short side cost 7 s of CPU and 3 GB).
"""
from __future__ import annotations

import io
import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from PIL import Image

from mmsearch.core.model_repository import PREPROCESSOR_FILE

# transformers' defaults for a CLIP image processor (OPENAI_CLIP_MEAN / OPENAI_CLIP_STD).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
MAX_ASPECT_RATIO = 50.0          # RequestLimits.image_aspect_ratio's default
MAX_RESIZE_PIXELS = 40_000_000   # RequestLimits.image_pixels' default: the bound on a resize's output


class ImageConfigError(ValueError):
    """A preprocessor_config.json this module cannot reproduce."""


class ImageInputError(ValueError):
    """An image the caller sent that cannot be used; the message names ``images[i]``."""


def _size(value: Any, what: str) -> dict[str, int]:
    if isinstance(value, int):
        return {"height": value, "width": value}
    if isinstance(value, dict) and (
        set(value) == {"shortest_edge"} or set(value) == {"height", "width"}
    ) and all(isinstance(v, int) and v > 0 for v in value.values()):
        return dict(value)
    raise ImageConfigError(f"{what} must be {{'shortest_edge': n}} or {{'height': h, 'width': w}}, got {value!r}")


@dataclass(frozen=True)
class ImageConfig:
    """The subset of preprocessor_config.json that CLIP-style processors use."""

    do_convert_rgb: bool = True
    do_resize: bool = True
    size: dict[str, int] | None = None
    resample: int = Image.Resampling.BICUBIC
    do_center_crop: bool = True
    crop_size: dict[str, int] | None = None
    do_rescale: bool = True
    rescale_factor: float = 1 / 255
    do_normalize: bool = True
    image_mean: tuple[float, float, float] = CLIP_MEAN
    image_std: tuple[float, float, float] = CLIP_STD

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> "ImageConfig":
        def triple(key: str, default: tuple[float, ...]) -> tuple[float, float, float]:
            value = raw.get(key, default)
            value = [value] * 3 if isinstance(value, (int, float)) else list(value)
            if len(value) != 3:
                raise ImageConfigError(f"{key} must have 3 values (RGB), got {value!r}")
            return tuple(float(v) for v in value)  # type: ignore[return-value]

        config = cls(
            do_convert_rgb=bool(raw.get("do_convert_rgb", True)),
            do_resize=bool(raw.get("do_resize", True)),
            size=_size(raw.get("size", {"shortest_edge": 224}), "size"),
            resample=int(raw.get("resample", Image.Resampling.BICUBIC)),
            do_center_crop=bool(raw.get("do_center_crop", True)),
            crop_size=_size(raw.get("crop_size", {"height": 224, "width": 224}), "crop_size"),
            do_rescale=bool(raw.get("do_rescale", True)),
            rescale_factor=float(raw.get("rescale_factor", 1 / 255)),
            do_normalize=bool(raw.get("do_normalize", True)),
            image_mean=triple("image_mean", CLIP_MEAN),
            image_std=triple("image_std", CLIP_STD),
        )
        if config.resample not in {int(r) for r in Image.Resampling}:
            raise ImageConfigError(f"resample {config.resample} is not a Pillow filter")
        if config.output_size is None:
            raise ImageConfigError(
                "outputs would have different sizes: enable do_center_crop or resize to a fixed height x width"
            )
        return config

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of every output, or None when it depends on the input."""
        if self.do_center_crop and self.crop_size:
            return self.crop_size["height"], self.crop_size["width"]
        if self.do_resize and self.size and "height" in self.size:
            return self.size["height"], self.size["width"]
        return None


def resize_target(width: int, height: int, size: dict[str, int]) -> tuple[int, int]:
    """(width, height) after resizing, by transformers' ``get_resize_output_image_size`` rule."""
    if "shortest_edge" not in size:
        return size["width"], size["height"]
    edge = size["shortest_edge"]
    short, long = (width, height) if width <= height else (height, width)
    new_long = int(edge * long / short)
    return (edge, new_long) if width <= height else (new_long, edge)


def to_rgb(image: Image.Image) -> Image.Image:
    """transformers' ``convert_to_rgb``: alpha (or a transparency key) is composited onto white."""
    if "A" in image.getbands() or image.info.get("transparency") is not None:
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")


def build_lookup(config: ImageConfig) -> np.ndarray:
    """[3, 256] float32: the rescaled, normalised value of each uint8 level, per channel."""
    levels = np.arange(256, dtype=np.uint8)[None, :].repeat(3, axis=0)
    values = (levels.astype(np.float64) * config.rescale_factor).astype(np.float32) if config.do_rescale \
        else levels.astype(np.float32)
    if config.do_normalize:
        mean = np.array(config.image_mean, dtype=np.float32)[:, None]
        std = np.array(config.image_std, dtype=np.float32)[:, None]
        values = (values - mean) / std
    return np.ascontiguousarray(values, dtype=np.float32)


def center_crop(pixels: np.ndarray, height: int, width: int) -> np.ndarray:
    """[H, W, C] uint8 centre crop; zero padding where the image is smaller, as transformers does."""
    rows, cols = pixels.shape[:2]
    top, left = (rows - height) // 2, (cols - width) // 2
    if top >= 0 and left >= 0:
        return pixels[top:top + height, left:left + width]
    pad_top, pad_left = max(0, -(-(height - rows) // 2)), max(0, -(-(width - cols) // 2))
    canvas = np.zeros((max(rows, height), max(cols, width), pixels.shape[2]), dtype=pixels.dtype)
    canvas[pad_top:pad_top + rows, pad_left:pad_left + cols] = pixels
    top, left = top + pad_top, left + pad_left
    return canvas[top:top + height, left:left + width]


def decode(data: bytes, index: int, max_bytes: int, max_pixels: int,
           max_aspect_ratio: float = MAX_ASPECT_RATIO) -> Image.Image:
    """Open an encoded image after checking its size, declared pixel count and aspect ratio; errors name
    ``images[index]``."""
    field = f"images[{index}]"
    if not data:
        raise ImageInputError(f"{field} is empty: send the encoded image bytes (JPEG, PNG, WebP ...)")
    if len(data) > max_bytes:
        raise ImageInputError(
            f"{field} is {len(data)} bytes, over the limit of {max_bytes} (MMSEARCH_MAX_IMAGE_BYTES): send a smaller image"
        )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > max_pixels:
                raise ImageInputError(
                    f"{field} declares {width}x{height} = {width * height} pixels, over the limit of {max_pixels} "
                    "(MMSEARCH_MAX_IMAGE_PIXELS): send a smaller image"
                )
            if min(width, height) < 1 or max(width, height) > max_aspect_ratio * min(width, height):
                raise ImageInputError(
                    f"{field} is {width}x{height}: its long side is over {max_aspect_ratio:g} times its short side "
                    "(MMSEARCH_MAX_IMAGE_ASPECT_RATIO): crop it to the part to search with"
                )
            image.load()
    except ImageInputError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageInputError(
            f"{field} is too large to decode safely ({exc}); the limit is MMSEARCH_MAX_IMAGE_PIXELS={max_pixels}"
        ) from None
    except Exception as exc:  # Pillow raises many types (UnidentifiedImageError, OSError, SyntaxError ...)
        raise ImageInputError(f"{field} cannot be decoded as an image ({type(exc).__name__}: {exc})") from None
    return image


class ImageProcessor:
    """A ``CLIPImageProcessor`` equivalent for one preprocessor_config.json."""

    def __init__(self, config: ImageConfig):
        self.config = config
        self.output_size: tuple[int, int] = config.output_size  # type: ignore[assignment]
        self._lookup = build_lookup(config)
        self._offsets = np.arange(3, dtype=np.intp) * 256

    @classmethod
    def from_folder(cls, folder: Path) -> "ImageProcessor":
        path = folder / PREPROCESSOR_FILE
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ImageConfigError(f"{path} not found") from None
        except (OSError, ValueError) as exc:
            raise ImageConfigError(f"{path}: not valid JSON ({exc})") from None
        try:
            return cls(ImageConfig.from_dict(raw))
        except ImageConfigError as exc:
            raise ImageConfigError(f"{path}: {exc}") from None

    def pixels(self, image: Image.Image, *, max_pixels: int = MAX_RESIZE_PIXELS, field: str = "image") -> np.ndarray:
        """Resized, cropped [H, W, 3] uint8 pixels (before rescale/normalise); ImageInputError naming ``field``
        when the resize would make more than ``max_pixels`` pixels (checked before resizing)."""
        config = self.config
        if config.do_resize and config.size:
            target = resize_target(image.width, image.height, config.size)
            if target[0] < 1 or target[1] < 1 or target[0] * target[1] > max_pixels:
                raise ImageInputError(
                    f"{field} is {image.width}x{image.height}: resizing it to {target[0]}x{target[1]} would make "
                    f"{target[0] * target[1]} pixels, over the limit of {max_pixels} (MMSEARCH_MAX_IMAGE_PIXELS); "
                    "crop it to the part to search with")
        image = to_rgb(image) if config.do_convert_rgb else image
        if image.mode != "RGB":
            image = image.convert("RGB")
        if config.do_resize and config.size:
            image = image.resize(target, resample=config.resample)
        pixels = np.asarray(image)
        if config.do_center_crop and config.crop_size:
            pixels = center_crop(pixels, config.crop_size["height"], config.crop_size["width"])
        return pixels

    def process_into(self, image: Image.Image, out: np.ndarray, *, max_pixels: int = MAX_RESIZE_PIXELS,
                     field: str = "image") -> None:
        """Write the [3, H, W] float32 pixel values of ``image`` into ``out``."""
        pixels = self.pixels(image, max_pixels=max_pixels, field=field)
        # one gather from the flat [3*256] table: channel c of level v is at c*256 + v
        np.take(self._lookup.ravel(), pixels.transpose(2, 0, 1) + self._offsets[:, None, None], out=out)

    def process(self, images: Sequence[Image.Image]) -> np.ndarray:
        """[batch, 3, H, W] float32 for decoded images (sequentially)."""
        out = np.empty((len(images), 3, *self.output_size), dtype=np.float32)
        for row, image in enumerate(images):
            self.process_into(image, out[row])
        return out
