"""What the demo plans per scene (pure): the job steps that build one scene's index, and the fingerprint
its index is reused by. :mod:`mmsearch.dev.demo_plan` plans the corpus's scene and
:mod:`mmsearch.dev.screenshots_plan` the opt-in ``screenshots`` scene with these."""
from __future__ import annotations

import hashlib
import json
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Mapping


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
class ScenePlan:
    """One scene the demo builds and serves. ``images_dir``: the image folder web serves at ``/images/``
    (served at the corpus's ``base_url`` while encode fetches it). The screenshots scene makes its
    material before the steps run: ``pages`` (modules whose pydoc pages are rendered into
    ``images_dir``) and ``random_clip`` (where a random-weight CLIP is built when no CLIP was given)."""

    scene: str
    modality: Literal["text", "image"]
    workdir: Path
    marker: Path
    fingerprint: Mapping[str, Any]
    build: tuple[JobStep, ...]
    images_dir: str = ""
    pages: tuple[str, ...] = ()
    random_clip: str = ""


def index_version(fingerprint: Mapping[str, Any]) -> str:
    """A version name per fingerprint: another corpus or model never lands in an existing collection."""
    return hashlib.sha256(json.dumps(dict(fingerprint), sort_keys=True).encode()).hexdigest()[:10]


def index_is_built(p: ScenePlan) -> bool:
    """True when the marker records this scene's fingerprint (its index can be reused)."""
    try:
        return json.loads(p.marker.read_text()).get("fingerprint") == dict(p.fingerprint)
    except (OSError, ValueError, AttributeError):
        return False
