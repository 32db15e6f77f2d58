"""Index versions built by the real job stages (``mmsearch job`` processes), for lifecycle tests.

:func:`build_version` runs encode -> push-milvus -> push-mongo for one version of a scene from a
prepared workdir, the summaries in the version's own MongoDB collection (``<scene>_<version>``,
what serving's ``summary.collection: "{collection}"`` reads). :func:`write_corpus` /
:func:`read_records` handle ``corpus.jsonl`` as ``prepare`` writes it. :func:`lifecycle_servers`
starts a Milvus that job processes and an in-process serving share (the Lite engine on TCP by
default) and a MongoDB-wire server; :func:`serve_versions` starts preprocess + serving on a scene
whose summaries are read per version.
"""
from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import Iterator

from mmsearch.dev.mongo import start_mongo
from tests.support.jobs import run_job
from tests.support.stack import MilvusServer, Stack, start_stack, t2t_config, write_config

TEXT_FIELD = "answer"  # the stdlib docstring summaries (see tests/fixtures/servers.py)


def prepare_stdlib(workdir: Path, modules: str) -> list[dict]:
    run_job("prepare", "--workdir", str(workdir), "--source-kind", "stdlib", "--source", modules)
    return read_records(workdir)


def read_records(workdir: Path) -> list[dict]:
    return [json.loads(line) for line in (workdir / "corpus.jsonl").read_text().splitlines() if line.strip()]


def write_corpus(workdir: Path, records: list[dict]) -> None:
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "corpus.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def build_version(workdir: Path, *, milvus_uri: str, mongo_uri: str, repository: Path, scene: str, version: str,
                  model: str = "minilm", encode: bool = True, push: bool = True, nice: int = 0) -> str:
    """Encode (unless done), push-milvus and push-mongo (unless ``push`` is false) ``scene_version``, the pushes
    at CPU niceness ``nice``; returns the collection name."""
    if encode:
        run_job("encode", "--workdir", str(workdir), "--repository", str(repository), "--model", model,
                "--text-field", TEXT_FIELD, "--device", "cpu")
    name = f"{scene}_{version}"
    if push:
        run_job("push-milvus", "--workdir", str(workdir), "--milvus-uri", milvus_uri, "--scene", scene,
                "--version", version, "--repository", str(repository), "--model", model, nice=nice)
        run_job("push-mongo", "--workdir", str(workdir), "--mongo-uri", mongo_uri, "--collection", name, nice=nice)
    return name


@contextlib.contextmanager
def lifecycle_servers(tmp: Path, milvus=None) -> Iterator[tuple]:
    """(milvus server, mongo server), started; stopped on exit. ``milvus``: another server object."""
    milvus = milvus or MilvusServer(tmp / "milvus.db")
    milvus.start()
    mongo = start_mongo(":memory:", timeout=60)
    try:
        yield milvus, mongo
    finally:
        milvus.stop()
        mongo.stop()


def serve_versions(loop, tmp: Path, scene: str, repository: Path, milvus_uri: str, mongo_uri: str,
                   model: str = "minilm") -> Stack:
    """Preprocess + serving on ``scene`` (T2T), its summaries read from the version searched."""
    config = t2t_config(scene, model=model)
    config["scenes"][scene]["defaults"]["summary"]["collection"] = "{collection}"
    write_config(tmp / "experiments.yaml", config)
    return start_stack(loop, models={model: str(repository / model)}, experiments=tmp / "experiments.yaml",
                       milvus_uri=milvus_uri, mongo_uri=mongo_uri, model_repository=str(repository))
