"""What every built image is: a non-root user, no compiler, no pip cache, no test dependencies.

Each fact is read inside the image (tests/images/image_facts.py run by the
image's own python, as the image's own user, root file system read-only).
"""
from __future__ import annotations

import re
import tomllib

import pytest

from tests.support.containers import ROOT, image_config

pytestmark = [pytest.mark.images, pytest.mark.slow, pytest.mark.timeout(2400)]

PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
ONLINE = {"services", "operator"}


def _names(requirements: list[str]) -> set[str]:
    names = {re.sub(r"[-_.]+", "-", re.match(r"[A-Za-z0-9_.-]+", r).group(0)).lower() for r in requirements}
    return names - {"mmsearch"}


# What only the tests and the demo install: none of it belongs in an image.
TEST_ONLY = _names(PYPROJECT["project"]["optional-dependencies"]["test"]
                   + PYPROJECT["project"]["optional-dependencies"]["dev"]) | {"pytest"}
TORCH = {"torch", "transformers", "sentence-transformers"}


def test_the_image_runs_as_a_non_root_user(image_name, images, engine, image_facts):
    user = (image_config(engine, images[image_name]).get("User") or "").split(":")
    assert user[0].isdigit() and int(user[0]) != 0, f"{image_name}: USER {user!r} is not a numeric non-root user"
    facts = image_facts(image_name)
    assert facts["uid"] != 0 and facts["gid"] != 0, f"{image_name} runs as uid {facts['uid']} gid {facts['gid']}"


def test_no_compiler_in_the_image(image_name, image_facts):
    assert image_facts(image_name)["compilers"] == [], f"{image_name} contains a compiler or linker"


def test_no_pip_cache_in_the_image(image_name, image_facts):
    assert image_facts(image_name)["pip_caches"] == [], f"{image_name} contains a pip cache"


def test_no_test_dependency_in_the_image(image_name, image_facts):
    installed = set(image_facts(image_name)["distributions"])
    assert not installed & TEST_ONLY, f"{image_name} contains test/demo dependencies {sorted(installed & TEST_ONLY)}"
    assert "mmsearch" in installed, f"{image_name} does not contain mmsearch itself"
    if image_name in ONLINE:
        assert not installed & TORCH, f"the online image {image_name} contains {sorted(installed & TORCH)}"
