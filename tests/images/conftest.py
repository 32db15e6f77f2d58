"""Fixtures of the image tests (tests/images/): the engine, the images built once, what is inside them.

The images are built by ``docker/images.py build --content-tag`` (what ``make
images`` runs) into the local store as ``localhost/mmsearch-test/<name>:<version>-<input hash>``:
an image built from the same Dockerfile, sources and base is reused, anything else is
rebuilt. The GPU job runner and the export runner (CUDA wheels, several GB) are built
only with ``MMSEARCH_BUILD_GPU_IMAGES=1``.

The image tests run first and on one pytest-xdist worker (tests/conftest.py's
scheduler), which builds the images when the first of them asks, while the other
worker runs the rest of the suite: the build overlaps the rest, and it runs once
(every worker used to start one at collection, and CI built each image twice at once).

Skips: only where no engine can run here (no engine installed, or not root for the
chroot runs of the buildah/podman store). ``make test`` sets
``MMSEARCH_IMAGE_TESTS=required``, which turns those skips into failures: in CI a
missing engine is a setup bug (``make system-deps`` installs buildah, podman and
debootstrap).
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from tests.support.containers import (
    ROOT,
    ContainerError,
    ContainerSpec,
    ImageBuild,
    Mount,
    engine_name,
    run_to_end,
)

REPO = "localhost/mmsearch-test"
CPU_IMAGES = ("services", "operator", "jobs-cpu")
GPU_IMAGES = ("jobs", "jobs-export")
REPORT = ROOT / "tests" / "artifacts" / "images.json"
BUILD_DIR = ROOT / ".cache" / "images" / "tests"  # the build's log and records (an ignored folder)
FACTS_SCRIPT = Path(__file__).with_name("image_facts.py")
_report: dict[str, dict] = {}  # image name -> build record and facts, for the terminal summary


def image_names() -> tuple[str, ...]:
    return CPU_IMAGES + (GPU_IMAGES if os.environ.get("MMSEARCH_BUILD_GPU_IMAGES") == "1" else ())


_build: list[ImageBuild] = []  # the build, once started


def pytest_sessionfinish(session, exitstatus):
    """Stop a build still running; write what was built and measured (also on an xdist worker, where
    no terminal summary is printed)."""
    for build in _build:
        build.cancel()
    if _report:
        REPORT.parent.mkdir(parents=True, exist_ok=True)
        REPORT.write_text(json.dumps(_report, indent=1))


def _cannot_run(reason: str) -> None:
    if os.environ.get("MMSEARCH_IMAGE_TESTS") == "required":
        pytest.fail(f"MMSEARCH_IMAGE_TESTS=required, but the image tests cannot run: {reason}", pytrace=False)
    pytest.skip(f"the image tests cannot run here: {reason}")


@pytest.fixture(scope="session")
def engine() -> str:
    try:
        name = engine_name()
    except ContainerError as exc:
        _cannot_run(str(exc))
    if name != "docker":
        if os.geteuid() != 0:
            _cannot_run(f"running images of the {name} store mounts file systems and chroots: run as root")
        missing = [tool for tool in ("unshare", "setpriv", "chroot", "podman") if not shutil.which(tool)]
        if missing:
            _cannot_run(f"{', '.join(missing)} not installed (`make system-deps`)")
    return name


@pytest.fixture(params=image_names())
def image_name(request) -> str:
    """Each image this session builds, in turn."""
    return request.param


@pytest.fixture(scope="session")
def images(engine) -> dict[str, str]:
    """Image name (docker/images.py's) -> reference of the image built from this checkout."""
    if not _build:
        _build.append(ImageBuild(list(image_names()), REPO, BUILD_DIR))
    try:
        records = _build[0].result()
    except ContainerError as exc:
        pytest.fail(f"building the images failed:\n{exc}", pytrace=False)
    for record in records:
        _report.setdefault(record["name"], {}).update(build=record)
    return {r["name"]: r["ref"] for r in records}


@pytest.fixture(scope="session")
def image_for(images):
    """The built image a manifest's ``image`` names (its repository's last part, e.g. mmsearch-operator)."""
    by_repository = {ref.rsplit(":", 1)[0].rsplit("/", 1)[1]: ref for ref in images.values()}

    def lookup(manifest_image: str) -> str:
        repository = manifest_image.split("@")[0].rsplit(":", 1)[0].rsplit("/", 1)[-1]
        assert repository in by_repository, (f"a manifest runs {manifest_image}, and `make images` builds no "
                                              f"{repository} image (it builds {sorted(by_repository)})")
        return by_repository[repository]
    return lookup


@pytest.fixture(scope="session")
def image_facts(engine, images, tmp_path_factory):
    """Image name -> facts printed by image_facts.py run inside it as the image's own user, root read-only."""
    cache: dict[str, dict] = {}

    def facts(name: str) -> dict:
        if name not in cache:
            spec = ContainerSpec(name=f"facts-{name}", image=images[name], command=["python", "/probe/image_facts.py"],
                                 read_only=True, mounts=[Mount(FACTS_SCRIPT.parent, "/probe", read_only=True)])
            code, out = run_to_end(engine, spec, tmp_path_factory.mktemp(f"facts-{name}"), timeout=120)
            assert code == 0, f"image_facts.py in {images[name]} exited with {code}:\n{out}"
            cache[name] = json.loads(out.strip().splitlines()[-1])
            _report.setdefault(name, {}).update(facts={k: cache[name][k] for k in ("venv_bytes", "site_packages")})
        return cache[name]
    return facts


def pytest_terminal_summary(terminalreporter):
    if not _report:
        return
    terminalreporter.section("container images")
    for name, entry in _report.items():
        build, facts = entry.get("build") or {}, entry.get("facts") or {}
        if build:
            how = "reused" if build["reused"] else f"built in {build['seconds']:.0f} s"
            terminalreporter.write_line(f"{name:12} {build['size'] / 1e6:6.0f} MB  {how:16} {build['ref']}")
        if facts:
            top = ", ".join(f"{k} {v / 1e6:.0f}" for k, v in list(facts["site_packages"].items())[:6])
            terminalreporter.write_line(f"{'':12} venv {facts['venv_bytes'] / 1e6:.0f} MB, largest (MB): {top}")
    terminalreporter.write_line(f"(also in {REPORT.relative_to(ROOT)})")
