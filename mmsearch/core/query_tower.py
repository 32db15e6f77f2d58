"""A query tower run in-process: a query's vector computed the way serving computes it.

Serving turns a text query into a vector in two hops: the preprocess service
tokenizes it with the ``tokenizer.json`` exported beside the model
(:func:`mmsearch.core.tokenizers.load_tokenizer`, one text, no padding) or
decodes and preprocesses an image (:class:`mmsearch.core.image_preprocessing.ImageProcessor`),
and the encoder runs the tower's ``model.onnx`` on those inputs cast to the
dtypes the session declares (:func:`mmsearch.core.onnx.feed`). :class:`QueryTower`
runs the same code in one process for offline callers (``mmsearch job
evaluate``), so an evaluation measures the vectors serving would search with.
Queries are encoded one at a time, as serving's lone queries are (a batch
would pad texts to the longest and change the figures in the last digits).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsearch.core import onnx
from mmsearch.core.image_preprocessing import ImageProcessor, decode
from mmsearch.core.limits import RequestLimits
from mmsearch.core.model_repository import ModelFolder
from mmsearch.core.tokenizers import TextTokenizer, load_tokenizer


@dataclass
class QueryTower:
    """An exported tower with its input processing (a tokenizer, an image processor or both)."""

    folder: ModelFolder
    session: object
    tokenizer: TextTokenizer | None
    images: ImageProcessor | None
    limits: RequestLimits

    @classmethod
    def load(cls, folder: ModelFolder, *, intra_op_threads: int = 0, limits: RequestLimits | None = None) -> "QueryTower":
        """``folder``'s tower; image queries are bounded by ``limits`` (default: the request limits' defaults)."""
        session = onnx.session(folder.onnx_path, intra_op_threads=intra_op_threads)
        tokenizer = load_tokenizer(folder.path) if folder.has_tokenizer else None
        images = ImageProcessor.from_folder(folder.path) if folder.has_image_processor else None
        return cls(folder, session, tokenizer, images, limits or RequestLimits())

    @property
    def name(self) -> str:
        return self.folder.manifest.name

    def _run(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        feed = onnx.feed(onnx.input_types(self.session), inputs)
        return np.asarray(self.session.run([self.folder.manifest.output], feed)[0], dtype=np.float32)

    def text(self, text: str) -> np.ndarray:
        """The vector [d] of one text query."""
        if self.tokenizer is None:
            raise ValueError(f"model {self.name!r} has no tokenizer: it cannot encode a text query")
        ids, mask = self.tokenizer.encode([text])
        return self._run({"input_ids": ids, "attention_mask": mask})[0]

    def image(self, data: bytes) -> np.ndarray:
        """The vector [d] of one encoded image query (JPEG, PNG, ...)."""
        if self.images is None:
            raise ValueError(f"model {self.name!r} has no image processor: it cannot encode an image query")
        image = decode(data, 0, self.limits.image_bytes, self.limits.image_pixels)
        return self._run({"pixel_values": self.images.process([image])})[0]
