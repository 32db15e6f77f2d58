"""Fixtures of the web tests: real web servers on 127.0.0.1 (port 0) in a background event loop.

The web server runs in its own thread and event loop so that tests can use
plain blocking clients (requests, Playwright's sync API).

- ``web``: the web service in front of ``search_stack`` (one T2T scene);
- ``two_scenes``: :class:`TwoScenes`, ONE preprocess + serving with the stdlib T2T scene
  and a T2I scene (tiny CLIP over generated PNGs indexed by the real jobs), and a web
  service in front of it that serves the PNGs at ``/images/`` (as the demo does);
- ``browser`` / ``page``: Debian's /usr/bin/chromium driven by Playwright.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from mmsearch.dev.processes import free_port
from tests.support.web import WebThread, web_settings

ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"


@dataclass(frozen=True)
class StackScene:
    """The scene of ``search_stack`` and a query whose expected document is in its index."""

    name: str
    query: str
    expected: str
    image_query: bool = False


@pytest.fixture(scope="session")
def serving_address(search_stack) -> str:
    return search_stack


@pytest.fixture(scope="session")
def stack_scene(stdlib_index) -> StackScene:
    return StackScene(stdlib_index.scene, "write rows to a csv file", "csv.writer")


@pytest.fixture(scope="session")
def web(serving_address) -> Iterator[WebThread]:
    """The web service in front of the real serving of ``search_stack``."""
    with WebThread(web_settings(serving_address, limits={"image_bytes": 64 * 1024})) as server:
        yield server


@pytest.fixture(scope="session")
def web_down() -> Iterator[WebThread]:
    """A web service whose serving is down (nothing listens at its address)."""
    with WebThread(web_settings(f"127.0.0.1:{free_port()}", request_timeout_seconds=2.0)) as server:
        yield server


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    return ARTIFACTS


@dataclass(frozen=True)
class TwoScenes:
    """A web service whose serving has a text -> text and a text -> image scene."""

    web: WebThread
    t2t: str             # the stdlib scene (MiniLM): cards
    t2i: str             # the image scene (tiny CLIP, text and image queries): a grid
    images: Path         # the indexed PNGs, also served by web at /images/<name>
    note: str = ""       # the image scene's note (the page shows it as text under the scene picker)


T2I_SCENE = "t2i"
T2I_NOTE = "This CLIP has random weights: <b>its</b> image match is chance & nothing more."  # markup: text only


@pytest.fixture(scope="session")
def two_scenes(stdlib_index, tiny_clip_repo, service_loop, tmp_path_factory) -> Iterator[TwoScenes]:
    """One stack serving both scenes, with the web service in front.

    Serving reads one Milvus URI, so both collections go into one fresh Lite file: the
    stdlib vectors the ``stdlib_index`` build encoded are pushed again, and the images are
    indexed there; the jobs run as processes before this process opens the file. The web
    service starts first (its /images/ route is the ``--base-url`` the encode job fetches,
    as in the demo), pointed at the port serving will take.
    """
    from tests.fixtures.servers import STDLIB_INDEX_LAYOUT
    from tests.fixtures.stack import STDLIB_FIELDS
    from tests.support.images import DISTINCT, IMAGE_LAYOUT, build_image_index, distinct_images, link_models, \
        write_images
    from tests.support.jobs import run_job
    from tests.support.stack import start_stack, t2i_config, t2t_config, write_config

    root = tmp_path_factory.mktemp("two-scenes")
    folder = write_images(root / "images", distinct_images())
    milvus = root / "milvus.db"
    models = link_models(root / "repo", stdlib_index.repository / stdlib_index.model, tiny_clip_repo / "tiny-clip",
                         tiny_clip_repo / "tiny-clip-image")
    serving_port = free_port()
    settings = web_settings(f"127.0.0.1:{serving_port}", limits={"image_bytes": 64 * 1024}, images_dir=folder)
    with WebThread(settings) as web:
        t2t, version = stdlib_index.scene, stdlib_index.version
        run_job("push-milvus", "--workdir", str(stdlib_index.workdir), "--milvus-uri", str(milvus), "--scene", t2t,
                "--version", version, "--repository", str(root / "repo"), "--model", stdlib_index.model,
                *STDLIB_INDEX_LAYOUT)
        run_job("publish", "--milvus-uri", str(milvus), "--scene", t2t, "--version", version)
        build_image_index(folder=folder, base_url=f"{web.url}/images/", repo=root / "repo", workdir=root / "work",
                          milvus=milvus, mongo_uri=stdlib_index.mongo_uri, scene=T2I_SCENE,
                          mongo_collection=f"{T2I_SCENE}_web", push_args=IMAGE_LAYOUT)
        experiments = root / "experiments.yaml"
        images = t2i_config(T2I_SCENE, summary_collection=f"{T2I_SCENE}_web", candidates=len(DISTINCT))["scenes"]
        images[T2I_SCENE]["note"] = T2I_NOTE
        images[T2I_SCENE]["fields"] = [{"name": "folder", "type": "keyword"}, {"name": "width", "type": "number"},
                                       {"name": "height", "type": "number"}]
        write_config(experiments, {"scenes": {
            **t2t_config(t2t, model=stdlib_index.model, fields=STDLIB_FIELDS)["scenes"], **images}})
        stack = start_stack(service_loop, models=models, experiments=experiments, milvus_uri=str(milvus),
                            mongo_uri=stdlib_index.mongo_uri, model_repository=str(root / "repo"), port=serving_port)
        try:
            yield TwoScenes(web, t2t, T2I_SCENE, folder, T2I_NOTE)
        finally:
            stack.close()


CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--no-first-run", "--disable-sync"]


@pytest.fixture(scope="module")
def browser(tmp_path_factory) -> Iterator:
    """A headless Chromium context (fresh profile); Playwright never downloads a browser here.

    Module scope, not session: Playwright's sync API keeps an event loop running on the main
    thread while it is open, and pytest-asyncio tests (tests/serving) cannot start theirs then.
    """
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make system-deps` (apt-get install chromium chromium-driver)")
    os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(tmp_path_factory.mktemp("chromium-profile")), executable_path=CHROMIUM, headless=True,
            args=CHROMIUM_ARGS, viewport={"width": 1100, "height": 800},
        )
        yield context
        context.close()


@pytest.fixture
def page(browser):
    """A new tab; ``page.dialogs`` collects the messages of any alert/confirm (there should be none)."""
    page = browser.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.dialogs = dialogs
    yield page
    page.close()


@pytest.fixture(scope="session")
def relay_file(keyed_stack, tmp_path_factory) -> Path:
    """The file holding the web service's own key to serving (scope relay) of ``keyed_stack``."""
    path = tmp_path_factory.mktemp("web-keys") / "serving-key"
    path.write_text(keyed_stack.keys["relay"] + "\n")
    return path


def keyed_web(stack, relay_file: Path, **overrides) -> WebThread:
    """A web service in front of both replicas of ``keyed_stack``, checking its key file (anonymous off unless
    ``access`` says otherwise), calling serving with the relay key."""
    access = {"api_keys_file": stack.keys_file, "anonymous_scenes": "", **overrides.pop("access", {})}
    return WebThread(web_settings(stack.addresses, access=access, serving_key_file=relay_file, **overrides))
