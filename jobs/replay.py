"""The write log replayed by the jobs that change which version serves or what it holds: publish, rollback, sync.

Live writes (:mod:`mmsearch.core.writelog`) are applied by the writer to the
version the scene's alias points at when it has logged them. A job that
moves the alias, or rewrites the live version in place, replays the entries
the version has not seen (:func:`mmsearch.core.writelog.replay`), so every
acknowledged write ends in the version serving ends on:

- ``publish`` and ``publish --rollback``: once before the alias moves (the
  bulk, from the position the target records: the last it had applied while
  it served, the one its snapshot had for a restore, none, so the whole log,
  for a new build, whose source does not hold the live writes), then, after
  the move, again from that same position (a read of the log is no
  snapshot: the first may have missed an entry still being inserted; what
  it applied is skipped by content hash), settling against the writer (which
  applies whatever it logs after the move to the new target itself).
- ``sync``: after its own rows, every entry logged since it read the
  collection, settling the same way, so a live write is never undone by the
  corpus's older copy.

The replay runs in the job, not in the writer, because the job has what it
needs and the writer may not run at all: the model repository (an entry
the writer encoded for the previous version's model is re-encoded by the
target's own document tower, loaded as ``encode`` loads it, checked by
``onnx_sha256``) and the MongoDB of the summaries. The writer brings a
target up to the log too (:meth:`mmsearch.services.writer.writes.Writer._repair`),
so a job killed after the move loses nothing either.

Without ``--mongo-uri`` (no write log configured) nothing is replayed.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmsearch.core.milvus.names import documents_collection
from mmsearch.core.milvus.record import read_info
from mmsearch.core.milvus.registry import read_state
from mmsearch.core.text_template import embedded_template
from mmsearch.core.writelog import ReplayError, WriteLog, applied_position, replay
from mmsearch.jobs.errors import JobError


@dataclass(frozen=True)
class LogAccess:
    """Where the write log and the summaries are (the writer's ``MMSEARCH_WRITER_LOG_DATABASE`` and
    ``MMSEARCH_WRITER_SCENES``), and the model repository that re-encodes another model's entries."""

    mongo_uri: str
    log_database: str = "mmsearch"
    database: str = "mmsearch"
    collection: str = "{collection}"
    repository: str | None = None
    timeout: float = 10.0


class Replayer:
    """Replays scene ``scene``'s write log onto Milvus collection ``name`` (see the module doc)."""

    def __init__(self, access: LogAccess, client, scene: str, name: str):
        from mmsearch.jobs.push_mongo import connect

        info = read_info(client, name)
        if info is None:
            raise JobError(f"collection {name} was not made by mmsearch: the write log cannot be replayed onto it")
        self.access, self.client, self.scene, self.name = access, client, scene, name
        self.layout, self.manifest = info.layout, info.manifest
        self.image = info.manifest.get("tower") == "image"
        self.template = None if self.image else embedded_template(read_state(client, name))
        self.mongo = connect(access.mongo_uri, access.timeout)
        self.log = WriteLog(self.mongo, access.log_database)
        self.documents = self.mongo[access.database][documents_collection(access.collection, name)]
        self._encode = None

    def position(self) -> int:
        """The log position ``name`` records (where a replay starts)."""
        return applied_position(self.client, self.name)

    def run(self, *, after: int, settle: bool) -> tuple[int, int]:
        """(entries written, position reached): :func:`mmsearch.core.writelog.replay`."""
        try:
            return replay(self.client, self.name, self.documents, self.log, self.scene, self.layout,
                          str(self.manifest.get("onnx_sha256") or ""), self._reencode, after=after, settle=settle)
        except ReplayError as exc:
            raise JobError(f"replaying the write log onto {self.name}: {exc}") from None

    def _reencode(self, entries) -> np.ndarray:
        if self._encode is None:
            self._encode = self._load()
        return self._encode(entries)

    def _load(self):
        from mmsearch.jobs.encode import TextInputs, encode_records, load_encoder

        name = str(self.manifest.get("name") or "")
        if not self.access.repository:
            raise JobError(f"the write log holds writes encoded by another model than {self.name}'s ({name}): "
                           "give --model-repository so they are re-encoded by its tower")
        encoder = load_encoder(self.access.repository, name, device="cpu")
        if encoder.manifest.onnx_sha256 != self.manifest.get("onnx_sha256"):
            raise JobError(f"--model-repository's {name!r} is not the export that built {self.name}: the "
                           "logged writes would be encoded by another model")
        if self.image:
            from mmsearch.core.image_preprocessing import ImageProcessor, decode

            processor = ImageProcessor.from_folder(encoder.folder.path)

            def images(entries) -> np.ndarray:
                pictures = [decode(e.image, e.id, 64 * 1024 * 1024, 200_000_000) for e in entries]
                return np.asarray(encoder.run({"pixel_values": processor.process(pictures)}), dtype=np.float32)
            return images
        inputs = TextInputs(encoder, self.template)

        def texts(entries) -> np.ndarray:
            ids, vectors, _ = encode_records(encoder, inputs, [e.record for e in entries], 64)
            order = {int(i): k for k, i in enumerate(ids)}
            return vectors[[order[e.id] for e in entries]]
        return texts

    def close(self) -> None:
        self.mongo.close()
