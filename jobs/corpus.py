"""``<workdir>/corpus.jsonl``: the prepared corpus every later stage reads, one way.

One JSON object per line, each with an integer ``id`` (written by
``prepare``). :func:`read_corpus` returns the records in file order and the
SHA-256 of the file (encode records it beside the vectors, so vectors of
another corpus are never mixed in); a malformed line is an error naming it.

:func:`document_hash` (:mod:`mmsearch.core.documents`, shared with the online writer) is the hash of one record (its canonical JSON: sorted
keys, no whitespace), recorded beside each vector in Milvus, so ``sync`` can
tell which documents are new, changed or gone. An image record carries the
SHA-256 of its file (``prepare``), so an image whose bytes changed is changed.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

from mmsearch.jobs.errors import JobError
from mmsearch.jobs.jsonl import json_objects
from mmsearch.core import artifacts
from mmsearch.core.documents import document_hash  # noqa: F401 (the stages import it from here)

CORPUS_FILE = "corpus.jsonl"


def corpus_uri(workdir: str) -> str:
    return artifacts.join(workdir, CORPUS_FILE)


def ensure_workdir(workdir: str) -> None:
    """Create a local ``--workdir`` now (S3 prefixes need nothing), so a stage that cannot write its
    output fails before its work with one line naming the flag, not at the end with a traceback."""
    if artifacts.is_s3(workdir):
        return
    try:
        path = artifacts.local_path(workdir)
    except artifacts.ArtifactError as exc:
        raise JobError(f"--workdir: {exc}") from None
    if path.exists() and not path.is_dir():
        raise JobError(f"--workdir {workdir} is a file, not a folder: give a folder (it is created if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise JobError(f"--workdir {workdir} cannot be created: {exc.strerror or exc}") from None


@dataclass(frozen=True)
class Corpus:
    records: list[dict]
    sha256: str

    def by_id(self) -> dict[int, dict]:
        return {record["id"]: record for record in self.records}


def read_corpus(workdir: str) -> Corpus:
    """The records of ``<workdir>/corpus.jsonl`` in order, and the file's SHA-256."""
    uri = corpus_uri(workdir)
    try:
        data = artifacts.read_bytes(uri)
    except artifacts.ArtifactError as exc:
        if not str(exc).startswith("artifact not found"):
            raise  # S3 unreachable, no such bucket: its own clear message
        raise JobError(f"no corpus at {uri}: run `mmsearch job prepare --workdir {workdir}` first") from None
    records = []
    for number, record in json_objects(data, uri, fix="re-run prepare"):
        if not isinstance(record.get("id"), int) or isinstance(record["id"], bool):
            raise JobError(f"{uri} line {number}: a record needs an integer 'id'; re-run prepare")
        records.append(record)
    return Corpus(records, hashlib.sha256(data).hexdigest())
