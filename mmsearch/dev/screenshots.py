"""The material of the demo's ``screenshots`` scene, made here at build time (nothing is downloaded).

- :func:`render_pages`: screenshots of the standard library's HTML documentation
  as ``pydoc -w`` writes it, rendered by Debian's headless Chromium
  (``apt-get install chromium``), one PNG per module (``page-<module>.png``).
  bench/images.py measures retrieval on the same pages.
- :func:`build_random_clip`: a CLIP model folder (Hugging Face layout) with
  random weights and a byte-level tokenizer, for machines where no trained
  CLIP can be downloaded. Its towers are untrained: its image-to-text
  similarity is chance, so the scene finds a page by the words OCR read in it
  (BM25), and the scene says so on the page.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

PAGES = ("csv", "json", "sqlite3", "gzip", "zipfile", "tarfile", "shutil", "tempfile", "calendar", "random",
         "statistics", "heapq")
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars")
CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
WINDOW = (1000, 700)
RENDER_TIMEOUT_S = 120


class ScreenshotError(RuntimeError):
    """A page could not be rendered; the message says what to install or change."""


def chromium() -> str:
    """The headless browser's path; ScreenshotError naming the package when none is installed."""
    for name in CHROMIUM_NAMES:
        found = shutil.which(name)
        if found:
            return found
    raise ScreenshotError("the screenshots scene renders pages with headless Chromium, and none is installed: "
                          "apt-get install chromium (or drop screenshots from MMSEARCH_DEMO_SCENES)")


def page_name(module: str) -> str:
    return f"page-{module}.png"


def render_pages(modules: tuple[str, ...] | list[str], folder: Path) -> list[Path]:
    """``folder/page-<module>.png`` for each module: its ``pydoc -w`` page in headless Chromium."""
    browser = chromium()
    folder.mkdir(parents=True, exist_ok=True)
    shots = []
    with tempfile.TemporaryDirectory(prefix="mmsearch-pydoc-") as tmp:
        html, profile = Path(tmp) / "html", Path(tmp) / "profile"
        html.mkdir()
        for module in modules:
            done = subprocess.run([sys.executable, "-m", "pydoc", "-w", module], cwd=html, capture_output=True,
                                  text=True, timeout=RENDER_TIMEOUT_S)
            page = html / f"{module}.html"
            if done.returncode != 0 or not page.is_file():
                raise ScreenshotError(f"pydoc -w {module} wrote no page ({(done.stdout + done.stderr).strip()[-200:]}): "
                                      f"name modules of the standard library in MMSEARCH_DEMO_SCREENSHOT_PAGES")
            shot = folder / page_name(module)
            subprocess.run([browser, *CHROMIUM_FLAGS, f"--user-data-dir={profile}",
                            f"--window-size={WINDOW[0]},{WINDOW[1]}", f"--screenshot={shot}", page.as_uri()],
                           capture_output=True, timeout=RENDER_TIMEOUT_S)
            if not shot.is_file():
                raise ScreenshotError(f"{browser} wrote no screenshot of {page.name}")
            shots.append(shot)
    return shots


def build_random_clip(dest: Path, seed: int = 0) -> Path:
    """A tiny CLIPModel folder with random weights, its image processor and a byte-level CLIP tokenizer
    (every byte a token, no merges: no training needed), at ``dest``. Needs torch and transformers (the
    ``export`` extra, which the demo installs)."""
    import torch
    from tokenizers import pre_tokenizers
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for char in sorted(pre_tokenizers.ByteLevel.alphabet()):
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    tokenizer = CLIPTokenizer(vocab=vocab, merges=[], model_max_length=77)
    special = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
               "pad_token_id": tokenizer.pad_token_id}
    size = 64
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=77, **special),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=size, patch_size=16),
        projection_dim=16,
    )
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    tokenizer.save_pretrained(str(partial))
    torch.manual_seed(seed)
    CLIPModel(config).eval().save_pretrained(str(partial))
    CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(
        str(partial))
    shutil.rmtree(dest, ignore_errors=True)
    partial.rename(dest)
    return dest
