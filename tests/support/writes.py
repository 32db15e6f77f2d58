"""A scene that takes live writes, for tests that go through web: a small stdlib index built by the real jobs
(MiniLM), the writer (``mmsearch serve writer``) and preprocess + serving on it, one key file shared by serving,
the writer and web (anonymous access off), with a relay key for web.

``writable_scene`` yields :class:`WritableScene`; ``KEY_ROLES`` names the keys it mints.
"""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from mmsearch.core.access.keys import mint
from tests.support.indexes import lifecycle_servers, prepare_stdlib, write_corpus
from tests.support.jobs import run_job
from tests.support.processes import ServiceProcess, start_service
from tests.support.stack import Stack, start_stack, t2t_config, write_config

KEY_ROLES = {"writer": (["write", "search"], None), "reader": (["search"], None),
             "elsewhere": (["write", "search"], ["other"]), "relay": (["relay"], None)}
"""Role -> (scopes, scenes; None: every scene): ``writer`` writes and searches, ``reader`` only searches,
``elsewhere`` writes scene ``other`` only, ``relay`` is web's key to serving and the writer."""


@dataclass
class WritableScene:
    scene: str
    milvus: object
    mongo: object
    writer: ServiceProcess
    stack: Stack
    keys: dict[str, str]
    keys_file: Path
    relay_file: Path
    records: list[dict]
    env: dict[str, str]


@contextmanager
def writable_scene(tmp: Path, repository: Path, loop, scene: str = "live", modules: str = "csv,json",
                   **writer_env: str) -> Iterator[WritableScene]:
    with lifecycle_servers(tmp) as (milvus, mongo):
        records = [{**r, "rank": i} for i, r in enumerate(prepare_stdlib(tmp / "v1", modules))]
        write_corpus(tmp / "v1", records)
        run_job("encode", "--workdir", str(tmp / "v1"), "--repository", str(repository), "--model", "minilm",
                "--text-field", "answer", "--device", "cpu")
        run_job("push-milvus", "--workdir", str(tmp / "v1"), "--milvus-uri", milvus.uri, "--scene", scene,
                "--version", "1", "--repository", str(repository), "--model", "minilm",
                "--fields", "category:keyword,rank:number", "--bm25-fields", "answer")
        run_job("push-mongo", "--workdir", str(tmp / "v1"), "--mongo-uri", mongo.uri, "--collection", f"{scene}_1")
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", scene, "--version", "1")
        keys, lines = {}, []
        for role, (scopes, scenes) in KEY_ROLES.items():
            keys[role], line = mint(scopes, scenes, name=role)
            lines.append(line)
        keys_file, relay_file = tmp / "keys.jsonl", tmp / "relay-key"
        keys_file.write_text("".join(line + "\n" for line in lines))
        relay_file.write_text(keys["relay"] + "\n")
        env = {"MMSEARCH_MILVUS_URI": milvus.uri, "MMSEARCH_MONGO_URI": mongo.uri,
               "MMSEARCH_MODEL_REPOSITORY": str(repository), "MMSEARCH_WRITER_SCENES": f'{{"{scene}": {{}}}}',
               "MMSEARCH_API_KEYS_FILE": str(keys_file), "MMSEARCH_ANONYMOUS_SCENES": "", **writer_env}
        writer = start_service("writer", env)
        config = t2t_config(scene, model="minilm", fields=("category:keyword", "rank:number"))
        config["scenes"][scene]["defaults"]["summary"]["collection"] = "{collection}"
        write_config(tmp / "experiments.yaml", config)
        stack = start_stack(loop, models={"minilm": str(repository / "minilm")}, experiments=tmp / "experiments.yaml",
                            milvus_uri=milvus.uri, mongo_uri=mongo.uri, model_repository=str(repository),
                            access={"api_keys_file": keys_file, "anonymous_scenes": ""})
        try:
            yield WritableScene(scene, milvus, mongo, writer, stack, keys, keys_file, relay_file, records, env)
        finally:
            stack.close()
            writer.stop()
