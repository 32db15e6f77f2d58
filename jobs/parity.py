"""The parity gate: ONNX Runtime output vs the PyTorch reference on varied inputs.

Inputs are deterministic (seeded) and deliberately varied: texts from one
character to far beyond the model's max length (truncation), English, code,
numbers, punctuation, accents, Chinese, emoji, empty strings; batches mix
lengths so padding and the attention mask matter. Images vary in size,
aspect ratio, mode and content. The ONNX side tokenizes/preprocesses with the
exported files and the same code serving uses (``mmsearch.services.preprocess``), so
the gate also covers the exported tokenizer.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence

import numpy as np

MIN_COSINE = 0.9999
INT8_MIN_COSINE = 0.99  # an int8 copy against the fp32 reference (mmsearch.jobs.quantize)
N_INPUTS = 256

_WORDS = (
    "the a of to and in is for on with how do i read write file csv json list dict sort parse date time "
    "network socket http request thread process queue async await photo cat dog car beach sunset mountain "
    "city street night red blue green old young running playing sitting python module function class error"
).split()
_EXTRA = ["naïve", "café", "über", "résumé", "北京", "上海", "一只猫", "在沙发上", "如何读取文件", "😀", "🚀",
          "3.14159", "2,718", "1234567890", "#!/usr/bin/env", "x[i] = f(y)", "e-mail@example.com", "C++", "---", "?!"]


def varied_texts(n: int = N_INPUTS, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    texts = ["", " ", "a", "北京", "😀"]
    lengths = np.concatenate([rng.integers(1, 12, n // 2), rng.integers(12, 80, n // 4), rng.integers(80, 420, n)])
    while len(texts) < n:
        k = int(lengths[len(texts)])
        pool = _WORDS if rng.random() < 0.7 else _WORDS + _EXTRA * 3
        words = [pool[int(i)] for i in rng.integers(0, len(pool), k)]
        text = " ".join(words)
        if rng.random() < 0.3:
            text = text.capitalize() + rng.choice([".", "?", "!", ""])
        texts.append(text)
    return texts


def varied_images(n: int = N_INPUTS, seed: int = 0) -> list:
    """PIL images: noise, gradients, flat colours, stripes; sizes 16..300 px, RGB/L/RGBA/P modes."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    images = []
    for i in range(n):
        w, h = (int(v) for v in rng.integers(16, 300, 2))
        kind = i % 4
        if kind == 0:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        elif kind == 1:
            x = np.linspace(0, 255, w)[None, :, None]
            y = np.linspace(0, 255, h)[:, None, None]
            arr = np.broadcast_to((x * rng.random(3) + y * rng.random(3)) % 256, (h, w, 3)).astype(np.uint8)
        elif kind == 2:
            arr = np.broadcast_to(rng.integers(0, 256, 3, dtype=np.uint8), (h, w, 3)).copy()
        else:
            arr = ((np.arange(w)[None, :, None] // max(1, int(rng.integers(1, 16)))) % 2 * 255 * np.ones((h, 1, 3))).astype(np.uint8)
        image = Image.fromarray(np.ascontiguousarray(arr), "RGB")
        image = [image, image.convert("L"), image.convert("RGBA"), image.convert("P")][int(rng.integers(0, 4))]
        images.append(image)
    return images


def compare(got: np.ndarray, want: np.ndarray) -> dict:
    """Cosine and absolute-difference figures between row-aligned vector sets."""
    if got.shape != want.shape:
        return {"n": int(want.shape[0]), "min_cosine": -1.0, "mean_cosine": -1.0, "max_abs_diff": float("inf"),
                "error": f"shape {got.shape} != reference {want.shape}"}
    num = np.sum(got.astype(np.float64) * want, axis=1)
    den = np.linalg.norm(got.astype(np.float64), axis=1) * np.linalg.norm(want.astype(np.float64), axis=1)
    cos = num / np.maximum(den, 1e-30)
    return {"n": int(got.shape[0]), "min_cosine": float(cos.min()), "mean_cosine": float(cos.mean()),
            "max_abs_diff": float(np.abs(got - want).max())}


def batched(run: Callable[[Sequence], np.ndarray], items: Sequence, batch_size: int = 32) -> np.ndarray:
    return np.concatenate([run(items[i:i + batch_size]) for i in range(0, len(items), batch_size)])


def onnx_text_runner(session, tokenizer_folder: Path) -> Callable[[Sequence[str]], np.ndarray]:
    """texts -> vectors with the exported tokenizer (as serving tokenizes) and an ORT session."""
    from mmsearch.core.tokenizers import load_tokenizer

    tokenizer = load_tokenizer(tokenizer_folder)

    def run(texts: Sequence[str]) -> np.ndarray:
        ids, mask = tokenizer.encode(texts)
        return session.run(["embedding"], {"input_ids": ids, "attention_mask": mask})[0]

    return run


CALIBRATION_SEED = 1
"""The seed of the inputs an int8 method calibrates on (``quantize.smooth``): other inputs than the gate's (seed 0)."""


def calibration_feeds(folder: Path, kind: str, n: int = N_INPUTS) -> list[dict[str, np.ndarray]]:
    """``n`` feeds of one input each for a ``kind`` ("text" or "image") tower exported to ``folder``: varied
    inputs of :data:`CALIBRATION_SEED`, through the exported tokenizer or image processor."""
    if kind == "text":
        from mmsearch.core.tokenizers import load_tokenizer

        tokenizer = load_tokenizer(folder)
        return [dict(zip(("input_ids", "attention_mask"), tokenizer.encode([text])))
                for text in varied_texts(n, seed=CALIBRATION_SEED)]
    pixels = pixel_values(folder, varied_images(n, seed=CALIBRATION_SEED))
    return [{"pixel_values": pixels[i:i + 1]} for i in range(len(pixels))]


def pixel_values(folder: Path, images: Sequence) -> np.ndarray:
    """[n, 3, H, W] float32 with the exported preprocessor_config.json (the serving implementation)."""
    from mmsearch.core.image_preprocessing import ImageProcessor

    return ImageProcessor.from_folder(folder).process(images)
