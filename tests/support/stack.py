"""Preprocess + serving as real gRPC servers for tests and benchmarks, on an index the jobs built.

Both services run in-process on one :class:`~tests.support.loops.ServiceLoop`
(their own thread), so tests may block freely and Milvus Lite's file is
opened by this process only (one process at a time may hold a Lite file).
They are the same ``start`` functions that ``mmsearch serve preprocess|serving``
run, bound to 127.0.0.1 on ephemeral ports and reached over real sockets.
Also: experiment configs (:func:`t2t_config`, :func:`t2i_config`) written the
way a ConfigMap update lands (:func:`write_config`), and the Milvus Lite engine
as a TCP server (:class:`MilvusServer`).
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator

import yaml

from mmsearch.dev.processes import free_port
from tests.support.loops import ServiceLoop, eventually, rounds_pass
from tests.support.processes import stop_process, wait_listening, wait_serving


def t2t_config(scene: str, *, model: str = "minilm", collection: str | None = None, backend: str = "embedded",
               weights: tuple[float, float] = (50, 50), fields: tuple[str, ...] = (),
               preprocess: str | None = None) -> dict:
    """A T2T experiment config: one ranking layer, control (score order) vs threshold arm; ``fields``
    (``name:type``) declares filterable fields; ``preprocess`` (inline | service) sets where text is
    tokenized (None: the arm default, inline)."""
    config = {"scenes": {scene: {
        "modality": "text",
        **({"fields": [dict(zip(("name", "type"), f.split(":"))) for f in fields]} if fields else {}),
        "defaults": {
            "query": {"text": {"model": model}},
            "encoder_backend": backend,
            "match": {"collection": collection or scene, "top_k": 5, "candidates": 30},
            "rank": {"name": "score_order"},
            "summary": {"database": "mmsearch", "collection": collection or scene,
                        "fields": ["question", "answer", "category"]},
        },
        "layers": [{"name": "ranking", "arms": [
            {"name": "control", "weight": weights[0]},
            {"name": "threshold", "weight": weights[1],
             "overrides": {"rank": {"name": "score_threshold", "params": {"min_score": 0.1}}}},
        ]}],
    }}}
    if preprocess is not None:
        config["scenes"][scene]["defaults"]["preprocess"] = preprocess
    return config


def ab_config(scene: str, *, model: str, collection: str, aa_layers: int = 3) -> dict:
    """:func:`t2t_config`'s ranking layer (control vs threshold) plus ``aa_layers`` A/A layers (arms ``a``
    and ``b``, no overrides): two arms that do the same, for checking that a report calls no winner there."""
    config = t2t_config(scene, model=model, collection=collection)
    config["scenes"][scene]["layers"] += [
        {"name": f"aa{i}", "arms": [{"name": "a", "weight": 50}, {"name": "b", "weight": 50}]}
        for i in range(1, aa_layers + 1)]
    return config


def t2i_config(scene: str, *, text_model: str = "tiny-clip", image_model: str = "tiny-clip-image",
               collection: str | None = None, summary_collection: str | None = None, candidates: int = 16) -> dict:
    """A T2I experiment config (text and image queries): control (score order) vs an MMR arm."""
    return {"scenes": {scene: {
        "modality": "image",
        "defaults": {
            "query": {"text": {"model": text_model}, "image": {"model": image_model}},
            "match": {"collection": collection or scene, "top_k": 5, "candidates": candidates},
            "summary": {"database": "mmsearch", "collection": summary_collection or collection or scene,
                        "fields": ["name", "url"]},
        },
        "layers": [{"name": "ranking", "arms": [
            {"name": "control", "weight": 50},
            {"name": "diverse", "weight": 50, "overrides": {"rank": {"name": "mmr", "params": {"lambda": 0.8}}}},
        ]}],
    }}}


@contextlib.contextmanager
def retrieval_stub(address: str) -> Iterator:
    """A blocking RetrievalService stub on its own channel, closed at the end."""
    import grpc

    from mmsearch.v1 import retrieval_pb2_grpc

    channel = grpc.insecure_channel(address)
    try:
        yield retrieval_pb2_grpc.RetrievalServiceStub(channel)
    finally:
        channel.close()


def stub_of(stack_fixture: str):
    """A module-scoped fixture ``stub``: a RetrievalService stub on the serving of the fixture named
    ``stack_fixture`` (a :class:`Stack`, or an address); in a test module: ``stub = stub_of("fault_stack")``."""
    import pytest

    @pytest.fixture(scope="module")
    def stub(request):
        stack = request.getfixturevalue(stack_fixture)
        with retrieval_stub(getattr(stack, "address", stack)) as stub_:
            yield stub_
    return stub


def search(stub, scene: str, *, timeout: float = 20, **fields):
    """One Search of ``scene`` with these SearchRequest fields."""
    from mmsearch.v1 import retrieval_pb2

    return stub.Search(retrieval_pb2.SearchRequest(scene=scene, **fields), timeout=timeout)


def write_config(path: Path, config: dict) -> None:
    """Replace ``path`` atomically the way a ConfigMap update does: a new file, then a symlink swap."""
    path.parent.mkdir(parents=True, exist_ok=True)
    versions = sorted(path.parent.glob(f".{path.name}.v*"))
    target = path.parent / f".{path.name}.v{len(versions):04d}"
    target.write_text(yaml.safe_dump(config) if isinstance(config, dict) else str(config))
    link = path.parent / f".{path.name}.tmp"
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(target.name)
    link.replace(path)


class MilvusServer:
    """The Milvus Lite engine (milvus-lite 2.5.1's binary) as a TCP server on a fixed port."""

    def __init__(self, db: Path):
        # Only the package's folder (its engine binary), so milvus_lite is found, not imported: its
        # __init__ imports pkg_resources (for its version string), which setuptools warns about.
        (package,) = importlib.util.find_spec("milvus_lite").submodule_search_locations
        self.lib = Path(package) / "lib"
        self.db, self.port, self.process = db, free_port(), None

    @property
    def uri(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:

        env = {**os.environ, "LD_LIBRARY_PATH": f"{self.lib}:{os.environ.get('LD_LIBRARY_PATH', '')}"}
        self.process = subprocess.Popen([str(self.lib / "milvus"), str(self.db), f"127.0.0.1:{self.port}", "ERROR"],
                                        env=env, cwd=self.db.parent, start_new_session=True)
        wait_listening(self.process, self.port, "milvus", timeout)

    def kill(self) -> None:
        """SIGKILL (a crash); ``start`` brings it back on the same port and data."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def stop(self) -> None:
        stop_process(self.process)
        self.process = None


@dataclass
class Stack:
    loop: ServiceLoop
    models: dict[str, str]
    serving_settings: Any
    preprocess: Any = None
    serving: Any = None
    preprocess_port: int = 0
    extra: dict = field(default_factory=dict)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.serving.port}"

    def start_preprocess(self) -> None:
        from mmsearch.services.preprocess.main import start
        from mmsearch.services.preprocess.settings import PreprocessSettings

        settings = PreprocessSettings(host="127.0.0.1", port=self.preprocess_port, metrics_port=0,
                                      models=self.models, log_json=False, tls=self.serving_settings.tls)
        self.preprocess = self.loop.call(start(settings))
        self.preprocess_port = self.preprocess.port

    def stop_preprocess(self) -> None:
        self.loop.call(self.preprocess.stop(0))
        self.preprocess = None

    def start_serving(self) -> None:
        from mmsearch.services.serving.main import start

        self.serving_settings = self.serving_settings.model_copy(
            update={"preprocess_address": f"127.0.0.1:{self.preprocess_port}"})
        self.serving = self.loop.call(start(self.serving_settings))

    def wait_route(self, scene: str, target: str, timeout: float = 30.0) -> None:
        """Block until serving routes ``scene`` to collection ``target`` (its route watcher followed)."""
        eventually(lambda: self.serving.store.current.routes[scene] == target,
                   f"serving routing {scene} to {target}", timeout=timeout)

    def route_rounds(self, n: int = 2) -> None:
        """Block until the route watcher has looked ``n`` more times: a move it would follow has shown."""
        rounds_pass(lambda: self.serving.routes.rounds, "route watcher", n)

    def health_rounds(self, n: int = 2) -> None:
        """Block until the health loop has probed ``n`` more times: what it finds now has shown."""
        rounds_pass(lambda: self.serving.health.rounds, "health loop", n)

    def credentials(self):
        """Channel credentials for serving's port when it serves TLS (its own certificate, as a client's), else None."""
        from mmsearch.services.runtime.tls import channel_credentials, read_material

        tls = self.serving_settings.tls
        return channel_credentials(read_material(tls)) if tls.serves else None

    def wait_serving(self, timeout: float = 60.0) -> None:
        """Block until health is SERVING (config active, dependencies answer)."""
        try:
            wait_serving(self.address, timeout, credentials=self.credentials())
        except TimeoutError:
            raise TimeoutError(f"serving not SERVING within {timeout}s: {self.serving.store.last_error} "
                               f"{self.serving.health.down}") from None

    def close(self) -> None:
        if self.serving is not None:
            self.loop.call(self.serving.stop(0))
        if self.preprocess is not None:
            self.loop.call(self.preprocess.stop(0))


def start_stack(loop: ServiceLoop, *, models: dict[str, str], experiments: Path, milvus_uri: str, mongo_uri: str,
                model_repository: str, triton_address: str = "", port: int = 0, **overrides) -> Stack:
    """Start preprocess then serving (on ``port``, 0: a free one); returns once serving is SERVING."""
    from mmsearch.services.serving.config.settings import ServingSettings

    settings = ServingSettings(host="127.0.0.1", port=port, metrics_port=0, experiments=experiments,
                               milvus_uri=milvus_uri, mongo_uri=mongo_uri, model_repository=model_repository,
                               triton_address=triton_address, log_json=False,
                               **{"timing": {"config_poll_seconds": 0.2, "health_interval_seconds": 0.2},
                                  "access": {"anonymous_scenes": "*"}, **overrides})
    stack = Stack(loop, models, settings)
    stack.start_preprocess()
    stack.start_serving()
    stack.wait_serving()
    return stack
