"""Batch tokenization with the ``tokenizer.json`` exported beside the model (Rust ``tokenizers``).

The result equals Hugging Face's ``AutoTokenizer.from_pretrained(folder)(texts,
padding=True, truncation=True)``: pad to the longest text of the batch (never
to the fixed length some ``tokenizer.json`` files carry, e.g. 128 for
all-MiniLM-L6-v2), truncate to the model max length. Settings that Hugging
Face reads from ``tokenizer_config.json`` (``model_max_length``,
``padding_side``, ``truncation_side``, ``pad_token``) are read from the same
file, so online and offline tokenization are identical.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tokenizers import Tokenizer

from mmsearch.core.model_repository import MANIFEST, TOKENIZER_FILE

log = logging.getLogger(__name__)

CONFIG_FILE = "tokenizer_config.json"
SPECIAL_TOKENS_FILE = "special_tokens_map.json"
# transformers' VERY_LARGE_INTEGER stands for "no max length"; anything this large is not a real one.
_NO_MAX_LENGTH = 1_000_000


class TokenizerLoadError(ValueError):
    """A model folder whose tokenizer files are missing or inconsistent."""


def _read_json(path: Path) -> dict[str, Any]:
    if not path.is_file():
        return {}
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerLoadError(f"{path}: not valid JSON ({exc})") from None


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config stores it: a string or an AddedToken dict."""
    if isinstance(value, dict):
        return value.get("content")
    return value if isinstance(value, str) else None


def resolve_max_length(folder: Path, config: dict[str, Any], tokenizer: Tokenizer) -> int | None:
    """The max length Hugging Face truncates to: ``model_max_length`` of tokenizer_config.json.

    When the config has no real one (absent or transformers' "very large"
    sentinel), fall back to the export manifest's ``max_length``, then to the
    truncation length inside tokenizer.json, so the service never tokenizes
    unbounded; ``None`` only if none of them exists.
    """
    value = config.get("model_max_length")
    manifest_length = _read_json(folder / MANIFEST).get("max_length")
    if isinstance(value, (int, float)) and 0 < value < _NO_MAX_LENGTH:
        if isinstance(manifest_length, int) and manifest_length != int(value):
            log.warning("tokenizer_config.json model_max_length differs from manifest.json max_length; "
                        "using model_max_length as transformers does",
                        extra={"folder": str(folder), "model_max_length": int(value), "max_length": manifest_length})
        return int(value)
    if isinstance(manifest_length, int) and manifest_length > 0:
        return manifest_length
    if tokenizer.truncation:
        return int(tokenizer.truncation["max_length"])
    return None


@dataclass
class TextTokenizer:
    """A loaded tokenizer configured once for padded, truncated batch encoding."""

    tokenizer: Tokenizer
    max_length: int | None
    pad_token: str
    pad_id: int

    def encode(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``input_ids`` and ``attention_mask`` as int64 arrays of shape [batch, longest]."""
        encodings = self.tokenizer.encode_batch(list(texts), add_special_tokens=True)
        width = len(encodings[0].ids) if encodings else 0
        ids = np.empty((len(encodings), width), dtype=np.int64)
        mask = np.empty((len(encodings), width), dtype=np.int64)
        for row, encoding in enumerate(encodings):
            ids[row] = encoding.ids
            mask[row] = encoding.attention_mask
        return ids, mask

    def encode_one(self, text: str) -> tuple[np.ndarray, np.ndarray]:
        """``encode([text])`` without the batch machinery: the Rust library's batch call hands even one
        text to its thread pool, which costs more under load than this call (bench/search.py); the same ids."""
        encoding = self.tokenizer.encode(text, add_special_tokens=True)
        return (np.array([encoding.ids], dtype=np.int64), np.array([encoding.attention_mask], dtype=np.int64))


def load_tokenizer(folder: Path) -> TextTokenizer:
    """Load ``folder/tokenizer.json`` with the padding/truncation Hugging Face would apply."""
    path = folder / TOKENIZER_FILE
    if not path.is_file():
        raise TokenizerLoadError(f"{path} not found: export the model with its tokenizer files")
    try:
        tokenizer = Tokenizer.from_file(str(path))
    except Exception as exc:  # the Rust library raises a bare Exception on a malformed file
        raise TokenizerLoadError(f"{path}: cannot load ({exc})") from None
    config = _read_json(folder / CONFIG_FILE)
    special = _read_json(folder / SPECIAL_TOKENS_FILE)
    max_length = resolve_max_length(folder, config, tokenizer)

    pad_token = _token_text(config.get("pad_token")) or _token_text(special.get("pad_token"))
    if pad_token is None and tokenizer.padding:
        pad_token = tokenizer.padding["pad_token"]
    pad_id = tokenizer.token_to_id(pad_token) if pad_token is not None else None
    if pad_token is None or pad_id is None:
        raise TokenizerLoadError(
            f"{folder}: no pad token (tokenizer_config.json pad_token={pad_token!r}); batches cannot be padded"
        )
    padding_side = config.get("padding_side", "right")
    truncation_side = config.get("truncation_side", "right")
    for name, side in (("padding_side", padding_side), ("truncation_side", truncation_side)):
        if side not in ("left", "right"):
            raise TokenizerLoadError(f"{folder / CONFIG_FILE}: {name} must be 'left' or 'right', got {side!r}")

    tokenizer.no_padding()
    tokenizer.enable_padding(direction=padding_side, pad_id=pad_id, pad_token=pad_token, pad_type_id=0)
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length, stride=0, strategy="longest_first", direction=truncation_side)
    log.info("tokenizer loaded", extra={"folder": str(folder), "max_length": max_length, "pad_token": pad_token})
    return TextTokenizer(tokenizer, max_length, pad_token, pad_id)
