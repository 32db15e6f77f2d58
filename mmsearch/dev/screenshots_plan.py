"""The demo's opt-in ``screenshots`` scene, planned (pure): ``MMSEARCH_DEMO_SCENES=t2t,screenshots``.

The material is real and made here (:mod:`mmsearch.dev.screenshots`): the
standard library's pydoc pages rendered by headless Chromium. ``prepare --ocr
rapidocr`` reads the text in each screenshot; ``encode`` embeds the pixels
with CLIP's image tower; ``push-milvus`` indexes the read text for BM25.

Decisions:
- The default arm (``fused``) fuses CLIP's dense match with BM25 over the OCR
  text, the text weighted higher (weighted min-max, dense 0.3 / BM25 0.7: the
  fused arm tests/serving/test_e2e_image_text.py and bench/images.py
  measure). The ``bm25`` and ``clip`` arms (weight 0) are there to compare.
  The text tower over the OCR text is not a third list: serving fuses one
  dense field with BM25, and this scene's dense field is CLIP's.
- No trained CLIP can be downloaded on every machine, so without
  ``MMSEARCH_DEMO_CLIP_MODEL`` the scene builds a tiny CLIP with random
  weights: its CLIP arm is chance, what finds a page is the words read in
  it. The demo says so when it starts (:data:`RANDOM_NOTICE`), and the page
  says so under the scene picker (the scene's ``note``); a CLIP named by
  ``MMSEARCH_DEMO_CLIP_MODEL`` gets no note.
- The page images are served by web at ``/images/`` (the build serves them
  there while encode fetches them); the index is reused while the pages, the
  CLIP model and the web port (the corpus records the URLs) stay the same.
- No labelled query set: evaluate measures the dense (CLIP) search, which
  with random weights is chance by construction; bench/images.py measures
  the scene's arms on a larger set of the same pages.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

from mmsearch.core.model_repository import tower_name
from mmsearch.dev.scene_plan import JobStep, ScenePlan, index_version

SCENE = "screenshots"
MODEL_NAME = "screenshots-clip"  # the CLIP's name in the model repository (its text tower; -image: its image tower)
LAYOUT = 1  # bump when the scene is built differently: old indexes are rebuilt
OCR_TIMEOUT_S = 300.0  # a loaded 2-core machine reads a 1000x700 page in seconds; a bound, not a target
BM25_FIELDS = "caption,alt_text,ocr_text"
SUMMARY_FIELDS = ["name", "url", "ocr_text"]
FUSED = {"name": "weighted", "params": {"weights": {"dense": 0.3, "bm25": 0.7}, "norm": "minmax"}}
RANDOM_NOTICE = ("CLIP here has random weights (no trained CLIP can be downloaded on this machine): its image match "
                 "is chance, and a page is found by the words OCR read in it (BM25), fused with that match.")


def screenshots_experiment(note: str = "") -> dict[str, Any]:
    """The scene's experiment config: image modality, text and image queries, the fused arm by default; ``note``
    (one line) is what the page shows under the scene picker, none when empty."""
    return {
        "modality": "image",
        **({"note": note} if note else {}),
        "defaults": {
            "query": {"text": {"model": MODEL_NAME}, "image": {"model": tower_name(MODEL_NAME, "image")}},
            "encoder_backend": "embedded",
            "match": {"collection": SCENE, "top_k": 10, "candidates": 50, "metric": "IP"},
            "rank": {"name": "score_order", "params": {}},
            "summary": {"database": "mmsearch", "collection": "{collection}", "fields": SUMMARY_FIELDS},
        },
        "layers": [{"name": "retrieval", "default": "fused", "arms": [
            {"name": "fused", "weight": 100, "overrides": {"match": {"retriever": "hybrid", "fusion": FUSED}}},
            {"name": "bm25", "weight": 0, "overrides": {"match": {"retriever": "bm25"}}},
            {"name": "clip", "weight": 0, "overrides": {"match": {"retriever": "dense"}}},
        ]}],
    }


def screenshots_scene(root: Path, *, repository: Path, milvus_uri: str, mongo_uri: str, base_url: str,
                      pages: tuple[str, ...], clip_model: str = "") -> tuple[ScenePlan, dict[str, Any], dict[str, str]]:
    """(the scene's plan, its experiment config, the preprocess models it adds {name: folder})."""
    scene_root = root / SCENE
    workdir, images_dir = scene_root / "workdir", scene_root / "pages"
    random_clip = "" if clip_model else str(root / "sources" / "random-clip")
    model = clip_model or random_clip
    fingerprint = {"scene": SCENE, "pages": list(pages), "model": model, "base_url": base_url, "layout": LAYOUT}
    version = index_version(fingerprint)
    image_tower = tower_name(MODEL_NAME, "image")
    build = (
        JobStep("prepare", {"workdir": str(workdir), "source_kind": "images", "source": str(images_dir),
                            "base_url": base_url, "ocr": "rapidocr", "ocr_timeout": OCR_TIMEOUT_S}),
        JobStep("export", {"model": model, "name": MODEL_NAME, "repository": str(repository)}),
        JobStep("encode", {"workdir": str(workdir), "repository": str(repository), "model": image_tower}),
        JobStep("push-milvus", {"workdir": str(workdir), "milvus_uri": milvus_uri, "scene": SCENE,
                                "version": version, "repository": str(repository), "model": image_tower,
                                "fields": "", "bm25_fields": BM25_FIELDS}),
        JobStep("push-mongo", {"workdir": str(workdir), "mongo_uri": mongo_uri,
                               "collection": f"{SCENE}_{version}"}),
        JobStep("publish", {"milvus_uri": milvus_uri, "scene": SCENE, "version": version}),
    )
    plan = ScenePlan(SCENE, "image", workdir, scene_root / "index.json", fingerprint, build,
                     images_dir=str(images_dir), pages=pages, random_clip=random_clip)
    models = {MODEL_NAME: str(repository / MODEL_NAME), image_tower: str(repository / image_tower)}
    return plan, screenshots_experiment(RANDOM_NOTICE if random_clip else ""), models
