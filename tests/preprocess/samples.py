"""Deterministic test inputs: varied texts and encoded images of many modes, sizes and formats."""
from __future__ import annotations

import io
import random

import numpy as np
from PIL import Image

WORDS = ("search photo cat dog city night river mountain python list sort file read query vector index "
         "retrieval model embedding the a of on in with and to is what how why don't it's I'll").split()
CHINESE = "的一是在不了有和人这中大为上个国我以要他时来用们生到作地于出就分对成会可主发年动同工也能下过子说产种面而方后多定行学法所民得经"
EMOJI = ["😀", "🐱", "🚀", "👍🏽", "👨‍👩‍👧", "🇫🇷", "❤️", "🍣", "✨"]
OTHER = ["naïve café", "Ünïcödé", "e\u0301", "مرحبا بالعالم", "Привет мир", "こんにちは", "안녕하세요", "\u00a0", "tab\tnew\nline",
         "ctrl\x00\x07", "x" * 300, "1+1=2 & <b>html</b>", "C:\\path\\file.txt", "ALL CAPS WORDS"]
WHITESPACE = ["", " ", "   ", "\t", "\n\n", "\u3000", " \t\n "]


def varied_texts(n: int = 1000, seed: int = 7) -> list[str]:
    """English, Chinese, emoji, mixed scripts, empty, whitespace-only and texts longer than 512 tokens."""
    rng = random.Random(seed)
    texts = []
    for i in range(n):
        kind = i % 10
        if kind in (0, 1, 2):
            text = " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 20)))
        elif kind == 3:
            text = "".join(rng.choice(CHINESE) for _ in range(rng.randint(1, 30)))
        elif kind == 4:
            text = " ".join(rng.choice(EMOJI + WORDS) for _ in range(rng.randint(1, 10)))
        elif kind == 5:
            text = rng.choice(WHITESPACE)
        elif kind == 6:  # longer than any max length here (512 and 77 tokens)
            text = " ".join(rng.choice(WORDS + list(CHINESE)) for _ in range(rng.randint(520, 700)))
        elif kind == 7:
            text = rng.choice(OTHER) + " " + rng.choice(WORDS)
        elif kind == 8:
            text = "".join(rng.choice(WORDS[0] + CHINESE[:5] + "!?.,;:'\"()[]{}") for _ in range(rng.randint(1, 60)))
        else:
            text = rng.choice(WORDS).upper() + rng.choice(EMOJI) + rng.choice(CHINESE) + str(rng.randint(0, 10**6))
        texts.append(text)
    return texts


def picture(width: int, height: int, seed: int = 0) -> np.ndarray:
    """[H, W, 4] uint8: smooth gradients plus noise, so JPEG and resampling behave as on photos."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / max(width - 1, 1), y * 255 / max(height - 1, 1),
                     (x + y) * 127 / max(width + height - 2, 1), 255 - y * 200 / max(height - 1, 1)], axis=-1)
    return np.clip(base + rng.normal(0, 25, base.shape), 0, 255).astype(np.uint8)


def encoded(mode: str, width: int, height: int, fmt: str = "PNG", seed: int = 0) -> bytes:
    """An encoded image; mode ``P+transparency`` is a palette image with a transparent index."""
    pixels = picture(width, height, seed)
    rgba = Image.fromarray(pixels, "RGBA")
    extra = {}
    if mode == "CMYK":
        image = Image.fromarray(pixels, "CMYK")
    elif mode == "P+transparency":
        image = rgba.convert("RGB").convert("P", palette=Image.Palette.ADAPTIVE, colors=64)
        extra["transparency"] = 5
    else:
        image = rgba.convert(mode)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **extra)
    return buffer.getvalue()


# (mode, format) pairs and (width, height) sizes the parity tests cover
MODES = [("RGB", "PNG"), ("RGB", "JPEG"), ("RGBA", "PNG"), ("L", "PNG"), ("L", "JPEG"), ("P", "PNG"),
         ("P+transparency", "PNG"), ("P", "GIF"), ("CMYK", "JPEG"), ("CMYK", "TIFF"), ("LA", "PNG"),
         ("RGB", "WEBP"), ("1", "BMP")]
SIZES = [(224, 224), (320, 240), (240, 320), (500, 37), (13, 9), (301, 300)]


# The image models of the preprocess test repository: name -> preprocessor_config.json overrides.
IMAGE_CONFIGS = {
    "tiny-clip-image": {},
    "small-image": {"size": {"shortest_edge": 40}, "crop_size": {"height": 32, "width": 30}},
    "padded-image": {"size": {"shortest_edge": 20}, "crop_size": {"height": 32, "width": 31}},
    "square-image": {"size": {"height": 50, "width": 60}, "do_center_crop": False},
}
