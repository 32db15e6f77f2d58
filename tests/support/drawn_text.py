"""Images of text drawn here, with the text they hold: OCR's ground truth (tests and bench/images.py).

:func:`drawn_set` draws ``n`` images, each one to three lines of words from a
fixed vocabulary, over the fonts installed (DejaVu, Liberation, FreeFont when
present; Pillow's own font always), sizes 14-40 px, a rotation of up to
``max_rotation`` degrees and pixel noise, all from one seed: the same set on
every run. :func:`char_accuracy` is 1 - edit distance / length of the truth
(whitespace collapsed), floored at 0.
"""
from __future__ import annotations

import random
from dataclasses import dataclass
from pathlib import Path

WORDS = ("invoice receipt total amount paid station platform train departure harbour museum garden ticket "
         "weather forecast temperature bakery bread coffee library science history meeting agenda budget "
         "report market river bridge mountain summer winter holiday festival concert theatre hospital "
         "pharmacy airport gate boarding passenger kitchen recipe butter sugar flour orange lemon parking "
         "exit entrance closed opened welcome warning danger electric bicycle").split()
FONT_FILES = ("dejavu/DejaVuSans.ttf", "dejavu/DejaVuSerif.ttf", "liberation/LiberationMono-Regular.ttf",
              "liberation/LiberationSans-Bold.ttf", "freefont/FreeSerif.ttf")
FONT_ROOT = Path("/usr/share/fonts/truetype")


@dataclass(frozen=True)
class Drawn:
    name: str
    text: str  # lines joined by "\n"
    image: object  # PIL.Image
    font: str
    size: int
    rotation: float
    noise: float


def fonts() -> list[tuple[str, object]]:
    """(name, loader(size)) for each font installed, Pillow's built-in one always among them."""
    from PIL import ImageFont

    found = [(f.split("/")[-1].removesuffix(".ttf"), lambda size, p=FONT_ROOT / f: ImageFont.truetype(str(p), size))
             for f in FONT_FILES if (FONT_ROOT / f).is_file()]
    return found + [("pillow-default", lambda size: ImageFont.load_default(size))]


def phrase(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


def draw(text: str, font, *, rotation: float = 0.0, noise: float = 0.0, seed: int = 0):
    """``text`` in black on white with a margin, rotated by ``rotation`` degrees, with ``noise`` (0..1) of
    the pixels set to random greys."""
    import numpy as np
    from PIL import Image, ImageDraw

    probe = ImageDraw.Draw(Image.new("L", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, spacing=8)
    margin = 24
    image = Image.new("L", (right - left + 2 * margin, bottom - top + 2 * margin), 255)
    ImageDraw.Draw(image).multiline_text((margin - left, margin - top), text, font=font, fill=0, spacing=8)
    if rotation:
        image = image.rotate(rotation, resample=Image.BICUBIC, expand=True, fillcolor=255)
    if noise:
        pixels = np.asarray(image).copy()
        rng = np.random.default_rng(seed)
        mask = rng.random(pixels.shape) < noise
        pixels[mask] = rng.integers(0, 256, int(mask.sum()), dtype=np.uint8)
        image = Image.fromarray(pixels)
    return image.convert("RGB")


def drawn_set(n: int = 40, *, seed: int = 7, max_rotation: float = 8.0, max_noise: float = 0.06) -> list[Drawn]:
    """``n`` drawn images cycling through the fonts, sizes, rotations and noise levels (reproducible)."""
    rng = random.Random(seed)
    loaders = fonts()
    sizes = (14, 18, 24, 32, 40)
    drawn = []
    for i in range(n):
        name, load = loaders[i % len(loaders)]
        size = sizes[(i // len(loaders)) % len(sizes)]
        text = "\n".join(phrase(rng, rng.randint(2, 4)) for _ in range(rng.randint(1, 3)))
        rotation = round(rng.uniform(-max_rotation, max_rotation), 1) if i % 3 else 0.0
        noise = round(rng.uniform(0, max_noise), 3) if i % 2 else 0.0
        image = draw(text, load(size), rotation=rotation, noise=noise, seed=seed + i)
        drawn.append(Drawn(f"drawn-{i:03d}.png", text, image, name, size, rotation, noise))
    return drawn


def edit_distance(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        current = [i]
        for j, cb in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (ca != cb)))
        previous = current
    return previous[-1]


def char_accuracy(read: str, truth: str) -> float:
    read, truth = " ".join(read.split()), " ".join(truth.split())
    return max(0.0, 1 - edit_distance(read, truth) / max(1, len(truth)))
