"""``mmsearch job encode``: vectors for ``W/corpus.jsonl`` with an exported document tower.

Layout under ``W/vectors/``:

- ``meta.json``: which model and corpus the vectors belong to (model name,
  tower, ``onnx_sha256``, dimension, chunk size, corpus record count and
  SHA-256). A rerun with another model or a changed corpus stops with a clear
  error instead of mixing vectors.
- ``chunk-KKKKKK-N.npz``: chunk K covers corpus lines ``[K*C, (K+1)*C)`` (C =
  ``--chunk-size``) and holds ``ids`` (int64 [N]), ``vectors`` (float32 [N, dim])
  and ``failed`` (int64: ids of images that could not be fetched or decoded;
  they are skipped with a warning, never fatal). Each chunk is written
  atomically (``artifacts.write_bytes``), so a chunk file that exists is
  complete: a rerun after a crash skips it.

Decisions:
- Sharding: ``--shard i/N`` takes the chunks K with ``K % N == i``. Chunks do
  not depend on N, so a rerun with another N still skips finished work, and N
  workers (a Kubernetes Indexed Job) write disjoint files into one workdir.
  ``--shard auto/N`` reads the index from ``JOB_COMPLETION_INDEX`` (set by
  Kubernetes for Indexed Jobs), so one pod template serves every worker.
- The tower decides the input: a text tower (``manifest.tower == "text"``)
  encodes the text ``--text-template`` makes of each record (``"{question}:
  {answer}"``; ``--text-field F``, default ``question``, is the template
  ``"{F}"``; see :mod:`mmsearch.core.text_template`) with the exported
  ``tokenizer.json`` (pad to the longest text of a batch; texts are sorted by
  length within a chunk to cut padding); the template is recorded in
  ``meta.json`` (``text_template``), push-milvus records it with the
  collection, and sync embeds changed documents with it; an image tower
  fetches each record's ``url`` (http(s)://, file:// or a path) and preprocesses it like ``CLIPImageProcessor`` from the exported
  ``preprocessor_config.json``. Both use ``mmsearch.services.preprocess``, the code the
  online path uses, so offline and online inputs are identical.
- onnxruntime with the CUDA execution provider when available (``--device
  auto``), else CPU; ``--threads`` sets intra-op threads (0: ORT's default).
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Iterator, Sequence

import numpy as np
import typer

from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import (
    BatchSize, Device, Model, ModelRepositoryUri, OnnxThreads, TextField, TextTemplate, Workdir,
)
from mmsearch.jobs.corpus import corpus_uri, ensure_workdir, read_corpus
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.progress import Progress
from mmsearch.core import artifacts, onnx
from mmsearch.core.documents import CHARS_PER_TOKEN, bounded_text  # noqa: F401 (shared with the online writer)
from mmsearch.core.model_repository import ModelFolder, ModelManifest, ModelRepository
from mmsearch.core.text_template import (
    DEFAULT_FIELD, MissingField, TemplateError, choose_template, recorded_template, render, template_fields,
)

log = logging.getLogger(__name__)

VECTORS = "vectors"
META = "meta.json"
_CHUNK = re.compile(r"^chunk-(\d{6})-(\d+)\.npz$")
FETCH_ATTEMPTS = 3


# --------------------------------------------------------------------------- sharding and corpus


def parse_shard(text: str | None, env: dict | None = None) -> tuple[int, int]:
    """``"i/N"`` (or ``"auto/N"`` with JOB_COMPLETION_INDEX) -> (i, N); None -> (0, 1)."""
    env = os.environ if env is None else env
    if not text:
        return 0, 1
    match = re.fullmatch(r"\s*(\d+|auto)\s*/\s*(\d+)\s*", text)
    if not match:
        raise JobError(f"--shard {text!r}: expected i/N (e.g. 0/4) or auto/N")
    index_text, count = match.group(1), int(match.group(2))
    if index_text == "auto":
        index_text = env.get("JOB_COMPLETION_INDEX", "")
        if not index_text.isdigit():
            raise JobError(f"--shard {text!r}: JOB_COMPLETION_INDEX is not set (auto/N is for Kubernetes Indexed Jobs)")
    index = int(index_text)
    if count < 1 or index >= count:
        raise JobError(f"--shard {text!r}: need 0 <= i < N")
    return index, count


# --------------------------------------------------------------------------- chunk files


def chunk_name(index: int, count: int) -> str:
    return f"chunk-{index:06d}-{count}.npz"


def finished_chunks(workdir: str) -> dict[int, str]:
    """{chunk index: file name} of the chunk files under W/vectors."""
    out = {}
    for rel in artifacts.list_files(artifacts.join(workdir, VECTORS)):
        match = _CHUNK.match(rel)
        if match:
            out[int(match.group(1))] = rel
    return out


def pack_chunk(ids: np.ndarray, vectors: np.ndarray, failed: Sequence[int]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, ids=np.asarray(ids, dtype=np.int64), vectors=np.asarray(vectors, dtype=np.float32),
             failed=np.asarray(failed, dtype=np.int64))
    return buf.getvalue()


def load_chunk(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with np.load(io.BytesIO(data)) as z:
        return z["ids"], z["vectors"], z["failed"]


def read_meta(workdir: str) -> dict:
    uri = artifacts.join(workdir, VECTORS, META)
    try:
        return json.loads(artifacts.read_bytes(uri))
    except artifacts.ArtifactError:
        raise JobError(f"{uri} not found: run `mmsearch job encode --workdir {workdir}` first") from None


def read_vectors(workdir: str) -> tuple[int, Iterator[tuple[np.ndarray, np.ndarray]]]:
    """(number of vectors, iterator of (ids int64, vectors float32) per chunk) of a finished encode.

    JobError when chunks are missing (an encode shard has not finished).
    """
    meta = read_meta(workdir)
    found = finished_chunks(workdir)
    missing = [k for k in range(meta["chunks"]) if k not in found]
    if missing:
        raise JobError(f"{artifacts.join(workdir, VECTORS)}: {len(missing)} of {meta['chunks']} chunks missing "
                       f"(first: {missing[0]}); re-run `mmsearch job encode` for every shard")
    total = sum(int(_CHUNK.match(found[k]).group(2)) for k in range(meta["chunks"]))

    def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for k in range(meta["chunks"]):
            ids, vectors, _ = load_chunk(artifacts.read_bytes(artifacts.join(workdir, VECTORS, found[k])))
            yield ids, vectors

    return total, chunks()


# --------------------------------------------------------------------------- the model


@dataclass
class Encoder:
    """An exported tower loaded for batch inference."""

    folder: ModelFolder
    session: object

    @property
    def manifest(self) -> ModelManifest:
        return self.folder.manifest

    @property
    def tower(self) -> str:
        return self.manifest.tower

    def run(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        return self.session.run([self.manifest.output], feed)[0]


def load_encoder(repository: str, name: str, *, device: str = "auto", threads: int = 0) -> Encoder:
    if threads < 0:
        raise JobError(f"--threads must be >= 0, got {threads}")
    folder = ModelRepository(repository).folder(name)
    return Encoder(folder, onnx.session(folder.onnx_path, device=device, intra_op_threads=threads))


# --------------------------------------------------------------------------- inputs


def fetch(url: str, timeout: float = 30.0) -> bytes:
    """Bytes of an image at an http(s)://, file:// URL or a local path (retried on network errors)."""
    if url.startswith(("http://", "https://")):
        last: Exception | None = None
        for _ in range(FETCH_ATTEMPTS):
            try:
                with urllib.request.urlopen(url, timeout=timeout) as resp:
                    return resp.read()
            except Exception as exc:  # urllib raises many kinds; retried, then reported
                last = exc
        raise OSError(f"{url}: {last}")
    return artifacts.local_path(url).read_bytes()


def text_template_of(text_field: str | None, text_template: str | None) -> str:
    """The template ``--text-field`` / ``--text-template`` ask for (default ``{question}``); JobError
    naming the flag at fault."""
    try:
        return choose_template(text_field, text_template) or choose_template(DEFAULT_FIELD, None)
    except TemplateError as exc:
        raise JobError(str(exc)) from None


class TextInputs:
    def __init__(self, encoder: Encoder, template: str):
        from mmsearch.core.tokenizers import load_tokenizer

        self.tokenizer = load_tokenizer(encoder.folder.path)
        self.template, self.fields = template, template_fields(template)
        self.side = (self.tokenizer.tokenizer.truncation or {}).get("direction", "right")

    def texts(self, records: Sequence[dict]) -> list[str]:
        out = []
        for record in records:
            try:
                text = render(self.template, record, self.fields)
            except MissingField as exc:
                raise JobError(f"record id {record['id']}: {exc} (set --text-field or --text-template)") from None
            out.append(bounded_text(text, self.tokenizer.max_length, self.side))
        return out

    def batches(self, records: Sequence[dict], batch_size: int) -> Iterator[tuple[np.ndarray, dict, list[int]]]:
        """(ids, model feed, failed ids) per batch; texts sorted by length so padding stays small."""
        texts = self.texts(records)
        order = sorted(range(len(records)), key=lambda i: len(texts[i]))
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            ids, mask = self.tokenizer.encode([texts[i] for i in rows])
            yield np.array([records[i]["id"] for i in rows], dtype=np.int64), {"input_ids": ids, "attention_mask": mask}, []


class ImageInputs:
    def __init__(self, encoder: Encoder, workers: int = 8):
        from mmsearch.core.image_preprocessing import ImageProcessor

        self.processor = ImageProcessor.from_folder(encoder.folder.path)
        self.pool = ThreadPoolExecutor(max_workers=workers)

    def _load(self, record: dict):
        from mmsearch.core.image_preprocessing import decode

        url = record.get("url")
        if not isinstance(url, str):
            raise JobError(f"record id {record['id']}: no 'url' field (an image corpus from `prepare --source-kind images`)")
        try:
            image = decode(fetch(url), 0, 64 * 1024 * 1024, 200_000_000)
            return self.processor.process([image])[0]
        except JobError:
            raise
        except Exception as exc:  # unreadable/missing image: skipped and counted, never fatal
            log.warning("skipping id %s: %s", record["id"], exc)
            return None

    def batches(self, records: Sequence[dict], batch_size: int) -> Iterator[tuple[np.ndarray, dict, list[int]]]:
        for start in range(0, len(records), batch_size):
            rows = records[start:start + batch_size]
            pixels = list(self.pool.map(self._load, rows))
            ok = [i for i, p in enumerate(pixels) if p is not None]
            failed = [rows[i]["id"] for i, p in enumerate(pixels) if p is None]
            feed = {"pixel_values": np.stack([pixels[i] for i in ok])} if ok else {}
            yield np.array([rows[i]["id"] for i in ok], dtype=np.int64), feed, failed


def encode_records(encoder: Encoder, inputs: TextInputs | ImageInputs, records: Sequence[dict], batch_size: int,
                   progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """(ids int64 [n], vectors float32 [n, dim], ids that could not be read) of ``records`` (encode, sync)."""
    ids_parts, vec_parts, failed = [], [], []
    for ids, feed, bad in inputs.batches(records, batch_size):
        failed.extend(bad)
        if len(ids):
            ids_parts.append(ids)
            vec_parts.append(encoder.run(feed).astype(np.float32, copy=False))
        if progress is not None:
            progress.update(len(ids) + len(bad))
    dim = int(encoder.manifest.dimension or 0)
    ids = np.concatenate(ids_parts) if ids_parts else np.zeros(0, np.int64)
    vectors = np.concatenate(vec_parts) if vec_parts else np.zeros((0, dim), np.float32)
    return ids, vectors, failed


# --------------------------------------------------------------------------- the stage


def encode(workdir: str, repository: str, model: str, *, shard: str | None = None, batch_size: int = 64,
           chunk_size: int = 4096, text_field: str | None = None, text_template: str | None = None,
           device: str = "auto", threads: int = 0) -> dict:
    """Encode this shard's unfinished chunks; returns (and reports) a summary: chunks written/skipped, vectors, failed.

    A text tower embeds what ``text_template`` makes of each record (``text_field`` F: the template
    ``{F}``; neither: ``{question}``)."""
    index, count = parse_shard(shard)
    template = text_template_of(text_field, text_template)
    if batch_size < 1:
        raise JobError(f"--batch-size must be >= 1, got {batch_size}")
    if chunk_size < 1:
        raise JobError(f"--chunk-size must be >= 1, got {chunk_size}")
    ensure_workdir(workdir)
    corpus = read_corpus(workdir)
    records, corpus_sha = corpus.records, corpus.sha256
    if not records:
        raise JobError(f"{corpus_uri(workdir)} is empty: nothing to encode")
    encoder = load_encoder(repository, model, device=device, threads=threads)
    n_chunks = (len(records) + chunk_size - 1) // chunk_size
    meta = {"model": model, "tower": encoder.tower, "onnx_sha256": encoder.manifest.onnx_sha256,
            "dimension": encoder.manifest.dimension, "chunk_size": chunk_size, "chunks": n_chunks,
            "corpus_records": len(records), "corpus_sha256": corpus_sha,
            "text_template": template if encoder.tower == "text" else None}
    meta_uri = artifacts.join(workdir, VECTORS, META)
    if artifacts.exists(meta_uri):
        old = json.loads(artifacts.read_bytes(meta_uri))
        old["text_template"] = recorded_template(old)  # vectors encoded before templates record text_field
        diff = sorted(k for k in meta if old.get(k) != meta[k])
        if diff:
            raise JobError(f"{artifacts.join(workdir, VECTORS)} holds vectors made with other settings ({', '.join(diff)} "
                           f"differ); delete that folder or use another --workdir")
    else:
        artifacts.write_bytes(meta_uri, json.dumps(meta, indent=2).encode())

    inputs = TextInputs(encoder, template) if encoder.tower == "text" else ImageInputs(encoder)
    done = finished_chunks(workdir)
    mine = [k for k in range(n_chunks) if k % count == index]
    todo = [k for k in mine if k not in done]
    progress = Progress("encode", total=sum(len(records[k * chunk_size:(k + 1) * chunk_size]) for k in todo))
    written = vectors_out = 0
    failed_all: list[int] = []
    for k in todo:
        chunk = records[k * chunk_size:(k + 1) * chunk_size]
        ids, vectors, failed = encode_records(encoder, inputs, chunk, batch_size, progress)
        order = np.argsort(ids, kind="stable")
        artifacts.write_bytes(artifacts.join(workdir, VECTORS, chunk_name(k, len(ids))),
                              pack_chunk(ids[order], vectors[order], failed))
        written += 1
        vectors_out += len(ids)
        failed_all.extend(failed)
    summary = {"shard": f"{index}/{count}", "chunks_written": written, "chunks_skipped": len(mine) - len(todo),
               "vectors": vectors_out, "failed": len(failed_all), "failed_ids": failed_all[:20],
               "providers": encoder.session.get_providers()}
    progress.finish(**summary)
    return summary


@job_app.command("encode")
def encode_command(
    workdir: Workdir,
    repository: ModelRepositoryUri,
    model: Model,
    shard: str = typer.Option(None, envvar="MMSEARCH_SHARD", help="i/N: this worker's share; auto/N reads JOB_COMPLETION_INDEX."),
    batch_size: BatchSize = 64,
    chunk_size: int = typer.Option(4096, envvar="MMSEARCH_CHUNK_SIZE", help="Records per chunk file (unit of resume)."),
    text_field: TextField = None,
    text_template: TextTemplate = None,
    device: Device = "auto",
    threads: OnnxThreads = 0,
) -> None:
    """Encode the corpus with an exported tower into resumable vector chunks."""
    with exit_on_error():
        encode(workdir, repository, model, shard=shard, batch_size=batch_size, chunk_size=chunk_size,
               text_field=text_field, text_template=text_template, device=device, threads=threads)
