"""Text queries tokenized inside serving: the :class:`~mmsearch.services.serving.backends.bundle.QueryPreprocessor` of arms
with ``preprocess: inline`` (the default for text).

It loads the same ``tokenizer.json`` (and ``tokenizer_config.json``) that the
preprocess service loads, from the tower's folder in the model repository
(``MMSEARCH_MODEL_REPOSITORY/<preprocess model>``), with the same function
(:func:`mmsearch.core.tokenizers.load_tokenizer`): the same pipeline, so the
ids are identical (``encode_one``, the single-text form of the service's
``encode``; tests/preprocess checks it against the service on the parity set). Tokenizing one query here
costs a small fraction of a Tokenize round trip to the service (and none of the service's CPU; bench/search.py),
so it runs on the event loop: no thread hop, no batching, no dependency.

Decisions:
- A tokenizer is loaded when a config is activated (:meth:`prepare`, on a
  thread: the repository may be on S3) and kept for the process; a model
  whose folder has no tokenizer refuses the config, naming the model and the
  folder.
- Images are not preprocessed here: image queries always go to the
  preprocess service (decoding and resizing take milliseconds of CPU that
  belong on its own pods); :meth:`image` refuses with Mismatch.
- :meth:`models` answers the models prepared so far (no dependency to ask).
"""
from __future__ import annotations

import asyncio
from typing import Callable

import numpy as np

from mmsearch.core.model_repository import ModelFolder
from mmsearch.core.tokenizers import TextTokenizer, TokenizerLoadError, load_tokenizer
from mmsearch.services.serving.errors import Mismatch


class InlinePreprocessor:
    """Tokenizes text queries in process with the model repository's tokenizer files (see module doc)."""

    def __init__(self, folder: Callable[[str], ModelFolder]):
        self._folder = folder
        self._tokenizers: dict[str, TextTokenizer] = {}

    def _load(self, model: str) -> TextTokenizer:
        try:
            folder = self._folder(model)
        except Exception as exc:  # ManifestError (not exported), ArtifactError (S3)
            raise Mismatch(f"inline tokenizer of model {model!r}: {exc}") from None
        if not folder.has_tokenizer:
            raise Mismatch(f"inline tokenizer of model {model!r}: {folder.path} has no tokenizer.json (an image "
                           "tower?); export the text tower with its tokenizer files, or set preprocess: service")
        try:
            return load_tokenizer(folder.path)
        except TokenizerLoadError as exc:
            raise Mismatch(f"inline tokenizer of model {model!r}: {exc}") from None

    async def prepare(self, model: str) -> None:
        """Load ``model``'s tokenizer (once); Mismatch naming the model when it cannot."""
        if model not in self._tokenizers:
            self._tokenizers[model] = await asyncio.to_thread(self._load, model)

    async def text(self, model: str, text: str, timeout: float) -> dict[str, np.ndarray]:
        tokenizer = self._tokenizers.get(model)
        if tokenizer is None:
            await self.prepare(model)
            tokenizer = self._tokenizers[model]
        ids, mask = tokenizer.encode_one(text)
        return {"input_ids": ids, "attention_mask": mask}

    async def image(self, model: str, image: bytes, timeout: float) -> dict[str, np.ndarray]:
        raise Mismatch("inline preprocessing tokenizes text only; image queries go to the preprocess service")

    async def models(self, timeout: float) -> set[str]:
        return set(self._tokenizers)

    async def close(self) -> None:
        self._tokenizers.clear()
