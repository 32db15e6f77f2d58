"""The model registry: each configured name -> its tokenizer and/or image processor.

A model folder (``REPO/NAME`` from the export job; local path, ``file://`` or
``s3://``) serves text when it holds ``tokenizer.json`` and images when it
holds ``preprocessor_config.json``; a folder with neither is an error.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

from mmsearch.core.artifacts import ArtifactError, materialize
from mmsearch.core.image_preprocessing import ImageConfigError, ImageProcessor
from mmsearch.core.model_repository import PREPROCESSOR_FILE, TOKENIZER_FILE, ModelFolder
from mmsearch.core.tokenizers import TextTokenizer, TokenizerLoadError, load_tokenizer

log = logging.getLogger(__name__)


class ModelLoadError(RuntimeError):
    """A registry entry that cannot be loaded; the message names the model and its folder."""


@dataclass(frozen=True)
class PreprocessModel:
    name: str
    uri: str
    tokenizer: TextTokenizer | None
    images: ImageProcessor | None


def load_model(name: str, uri: str) -> PreprocessModel:
    """Load one model folder (downloaded once when it is on S3)."""
    try:
        folder = ModelFolder(materialize(uri))
        tokenizer = load_tokenizer(folder.path) if folder.has_tokenizer else None
        images = ImageProcessor.from_folder(folder.path) if folder.has_image_processor else None
    except (ArtifactError, TokenizerLoadError, ImageConfigError, OSError) as exc:
        raise ModelLoadError(f"model {name!r} (MMSEARCH_MODELS) cannot be loaded from {uri}: {exc}") from None
    if tokenizer is None and images is None:
        raise ModelLoadError(
            f"model {name!r} (MMSEARCH_MODELS): {uri} has neither {TOKENIZER_FILE} nor {PREPROCESSOR_FILE}; "
            "point it at a folder written by `mmsearch job export` (REPO/NAME or REPO/NAME-image)"
        )
    log.info("model loaded", extra={"model": name, "uri": uri, "text": tokenizer is not None,
                                    "image": images is not None})
    return PreprocessModel(name, uri, tokenizer, images)


def load_models(models: dict[str, str]) -> dict[str, PreprocessModel]:
    """Load every registry entry; the first failure stops the service (fail fast)."""
    return {name: load_model(name, uri) for name, uri in models.items()}
