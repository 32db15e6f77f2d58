"""The demo's index build: each job stage's own function, in order, in a spawned child process.

Decisions:
- The steps call the stage functions (``mmsearch.jobs.prepare.prepare``,
  ``mmsearch.jobs.export.export_model`` ...) with the plan's keyword arguments: the
  same code and the same argument names as the ``mmsearch job`` commands,
  without going through their command lines. ``evaluate`` runs before
  ``publish`` when the plan has a labelled query set, and its figures are
  printed (publish records them, and refuses the index below
  ``MMSEARCH_DEMO_MIN_RECALL``).
- The build runs in a *spawned child*: torch is freed when it ends, and
  Milvus Lite's file lock is released before serving opens the same file.
- For an image corpus the folder is served at the URL the corpus records
  (the web page's ``/images/``) while the index is built, since encode
  fetches the images from there and web starts only after the index exists.
- A stage's :class:`~mmsearch.core.errors.MmsearchError` ends the build with
  its one-line message and the stage's name.
- Each scene of the plan is built on its own (its own marker: one scene's
  index is reused while another is rebuilt). The screenshots scene first
  renders its pages and, when no CLIP was named, builds the random-weight
  CLIP it exports (:mod:`mmsearch.dev.screenshots`).
"""
from __future__ import annotations

import contextlib
import json
import multiprocessing
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import urlparse

from mmsearch.dev.demo_plan import DemoPlan
from mmsearch.dev.processes import say
from mmsearch.dev.scene_plan import ScenePlan


def stage_functions() -> dict[str, Callable[..., Any]]:
    """Stage name -> the function its ``mmsearch job`` command runs (imported in the build's child)."""
    from mmsearch.jobs.encode import encode
    from mmsearch.jobs.evaluate import evaluate
    from mmsearch.jobs.export import export_model
    from mmsearch.jobs.prepare import prepare
    from mmsearch.jobs.publish import publish
    from mmsearch.jobs.push_milvus import push_milvus
    from mmsearch.jobs.push_mongo import push_mongo

    return {"prepare": prepare, "export": export_model, "encode": encode, "push-milvus": push_milvus,
            "push-mongo": push_mongo, "evaluate": evaluate, "publish": publish}


def make_material(scene: ScenePlan) -> None:
    """What the scene's steps read that no job makes: its rendered pages, its random-weight CLIP."""
    from mmsearch.dev.screenshots import ScreenshotError, build_random_clip, render_pages

    try:
        if scene.pages:
            say(f"{scene.scene}: rendering {len(scene.pages)} pydoc pages with headless Chromium")
            render_pages(scene.pages, Path(scene.images_dir))
    except ScreenshotError as exc:
        raise SystemExit(f"error: {exc}") from None
    if scene.random_clip and not Path(scene.random_clip).is_dir():
        say(f"{scene.scene}: building a tiny CLIP with random weights in {scene.random_clip}")
        build_random_clip(Path(scene.random_clip))


def run_build(p: DemoPlan, scene: ScenePlan) -> None:
    """Every stage of ``scene.build`` in order (the spawned child's target)."""
    from mmsearch.jobs.evaluate import summary_line
    from mmsearch.jobs.progress import Progress
    from mmsearch.core.errors import MmsearchError
    from mmsearch.core.model_repository import ModelRepository

    make_material(scene)
    functions = stage_functions()
    for step in scene.build:
        if step.stage == "export" and ModelRepository(p.repository).has(step.params["name"]):
            say("export: the model repository already holds this model; skipped")
            continue
        say(f"running {step.command()}")
        kwargs = dict(step.params)
        try:
            if step.stage in ("prepare", "push-milvus", "push-mongo"):
                with Progress(step.stage) as progress:
                    progress.finish(**functions[step.stage](**kwargs, progress=progress))
            elif step.stage == "evaluate":
                say(summary_line(functions[step.stage](**kwargs)))
            else:
                functions[step.stage](**kwargs)
        except MmsearchError as exc:
            raise SystemExit(f"error: the index build failed at `mmsearch job {step.stage}`: {exc}") from None


@contextlib.contextmanager
def serving_images(p: DemoPlan, scene: ScenePlan) -> Iterator[None]:
    """The scene's image folder at the corpus's base URL while its index is built (see module doc)."""
    from mmsearch.dev.folders import serve_folder

    base = scene.fingerprint.get("base_url")
    if not base or not scene.images_dir:
        yield
        return
    Path(scene.images_dir).mkdir(parents=True, exist_ok=True)  # the screenshots are rendered into it later
    url = urlparse(base)
    with serve_folder(scene.images_dir, host=url.hostname or p.host, port=url.port or 0, prefix=url.path):
        yield


def build_index(p: DemoPlan, scene: ScenePlan | None = None) -> None:
    """Build ``scene`` (default: the corpus's) from scratch and record its fingerprint in its marker."""
    scene = scene or p.scenes[0]
    scene_root = scene.marker.parent
    if scene_root.exists():
        shutil.rmtree(scene_root)  # a stale or partial build of another fingerprint
    scene_root.mkdir(parents=True)
    child = multiprocessing.get_context("spawn").Process(target=run_build, args=(p, scene), name="demo-build")
    with serving_images(p, scene):
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
    scene.marker.write_text(json.dumps({"fingerprint": dict(scene.fingerprint), "built_at": time.time()}, indent=2))
