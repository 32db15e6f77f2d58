"""The document towers a live write encodes with: the model a collection records, loaded as ``encode`` loads it.

A collection records the manifest of the tower that built its vectors (the
text tower of a T2T scene, CLIP's image tower of a T2I one). The writer
loads that folder of the model repository, checks its ``onnx_sha256``
against the record (another export under the same name would mix two
models' vectors in one collection), and encodes with the same inputs the
offline ``encode`` makes: the text the collection's template makes of the
record, cut (:func:`mmsearch.core.documents.bounded_text`) and tokenized
with the exported ``tokenizer.json`` (padded to the longest of the batch,
texts sorted by length); images decoded within the query limits and
preprocessed by :class:`mmsearch.core.image_preprocessing.ImageProcessor`
from the exported ``preprocessor_config.json``.
"""
from __future__ import annotations

import threading
from typing import Sequence

import numpy as np

from mmsearch.core import onnx
from mmsearch.core.documents import bounded_text
from mmsearch.core.errors import MmsearchError
from mmsearch.core.model_repository import ModelRepository
from mmsearch.core.text_template import render, template_fields


class TowerError(MmsearchError):
    """A collection whose document tower is not in the model repository (or is another export)."""


class DocumentTower:
    """One loaded document tower (text or image)."""

    def __init__(self, repository: str, manifest: dict, threads: int = 0):
        name = str(manifest.get("name") or "")
        try:
            self.folder = ModelRepository(repository).folder(name)
        except Exception as exc:
            raise TowerError(f"the collection's tower {name!r} is not in the model repository {repository} "
                             f"(MMSEARCH_MODEL_REPOSITORY): {exc}") from None
        if self.folder.manifest.onnx_sha256 != manifest.get("onnx_sha256"):
            raise TowerError(f"the model repository's {name!r} (onnx {self.folder.manifest.onnx_sha256[:12]}) is "
                             f"not the export that built the collection (onnx {str(manifest.get('onnx_sha256'))[:12]})")
        self.kind = self.folder.manifest.tower
        self.onnx_sha256 = self.folder.manifest.onnx_sha256
        # No spinning: writes come in bursts, and onnxruntime's threads spinning after each call for the next
        # burned the cores serving searches on (bench/writes.py: the writer's cores under a write load)
        self.session = onnx.session(self.folder.onnx_path, device="cpu", intra_op_threads=threads, spinning=False)
        self.output = self.folder.manifest.output
        self.lock = threading.Lock()  # one inference at a time per tower: threads are onnxruntime's
        if self.kind == "text":
            from mmsearch.core.tokenizers import load_tokenizer

            self.tokenizer = load_tokenizer(self.folder.path)
            self.side = (self.tokenizer.tokenizer.truncation or {}).get("direction", "right")
        else:
            from mmsearch.core.image_preprocessing import ImageProcessor

            self.processor = ImageProcessor.from_folder(self.folder.path)

    def _run(self, feed: dict) -> np.ndarray:
        with self.lock:
            return np.asarray(self.session.run([self.output], feed)[0], dtype=np.float32)

    def texts(self, template: str, records: Sequence[dict], batch_size: int = 64) -> np.ndarray:
        """Vectors [n, dim] of what ``template`` makes of ``records`` (in their order)."""
        fields = template_fields(template)
        texts = [bounded_text(render(template, r, fields), self.tokenizer.max_length, self.side) for r in records]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out = np.zeros((len(texts), int(self.folder.manifest.dimension)), dtype=np.float32)
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = self.tokenizer.encode([texts[i] for i in rows])
            out[rows] = self._run({"input_ids": ids, "attention_mask": mask})
        return out

    def images(self, images: Sequence, batch_size: int = 32) -> np.ndarray:
        """Vectors [n, dim] of decoded images (PIL), preprocessed as the offline encode does."""
        out = np.zeros((len(images), int(self.folder.manifest.dimension)), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            pixels = self.processor.process(list(images[start:start + batch_size]))
            out[start:start + len(pixels)] = self._run({"pixel_values": pixels})
        return out


class Towers:
    """The towers loaded so far, by ``onnx_sha256`` (collections built by one export share one)."""

    def __init__(self, repository: str, threads: int = 0):
        self.repository, self.threads = repository, threads
        self._loaded: dict[str, DocumentTower] = {}
        self._lock = threading.Lock()

    def of(self, manifest: dict) -> DocumentTower:
        key = str(manifest.get("onnx_sha256") or "")
        with self._lock:
            tower = self._loaded.get(key)
            if tower is None:
                tower = self._loaded[key] = DocumentTower(self.repository, manifest, self.threads)
            return tower
