"""An image corpus indexed for T2I by the real jobs (helpers shared by the serving and web tests).

No fixtures here, only the steps each area's fixtures compose, so the
serving tests (images over a plain ``http.server``) and the web tests (images
served by the web service's own ``/images/`` route, as in the demo) build
their indexes the same way:

- :func:`distinct_images` / :func:`write_images`: generated pictures on disk;
- :func:`link_models`: a model repository of symlinks to exported models;
- :func:`build_image_index`: ``mmsearch job prepare --source-kind images
  --base-url`` -> ``encode`` (the vision tower fetches every URL) ->
  ``push-milvus`` -> ``push-mongo`` -> ``publish``, each a real process.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable

from tests.support.jobs import run_job

IMAGE_MODEL = "tiny-clip-image"

# name -> (pattern, RGB): each a different pattern or colour, so a random tiny CLIP still tells them apart
# and a person looking at the grid can too.
DISTINCT = {
    "red-square": ("square", (220, 40, 40)), "blue-circle": ("circle", (40, 80, 220)),
    "green-stripes": ("vstripes", (30, 170, 60)), "orange-hstripes": ("hstripes", (240, 140, 20)),
    "purple-checks": ("checks", (140, 50, 180)), "teal-gradient": ("gradient", (20, 160, 160)),
    "yellow-cross": ("cross", (230, 200, 30)), "black-diagonal": ("diagonal", (20, 20, 20)),
    "pink-ring": ("ring", (240, 110, 170)), "grey-noise": ("noise", (128, 128, 128)),
    "navy-triangle": ("triangle", (20, 30, 110)), "brown-dots": ("dots", (130, 80, 40)),
}


def _pattern(kind: str, colour: tuple[int, int, int], size: int):
    import numpy as np
    from PIL import Image

    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / size
    mask = {
        "square": (abs(x - .5) < .3) & (abs(y - .5) < .3),
        "circle": (x - .5) ** 2 + (y - .5) ** 2 < .12,
        "vstripes": (x * 8).astype(int) % 2 == 0,
        "hstripes": (y * 8).astype(int) % 2 == 0,
        "checks": ((x * 6).astype(int) + (y * 6).astype(int)) % 2 == 0,
        "cross": (abs(x - .5) < .1) | (abs(y - .5) < .1),
        "diagonal": ((x + y) * 6).astype(int) % 2 == 0,
        "ring": abs(np.hypot(x - .5, y - .5) - .3) < .08,
        "triangle": (y > .2) & (abs(x - .5) < (y - .2) * .6),
        "dots": (np.hypot((x * 5) % 1 - .5, (y * 5) % 1 - .5) < .3),
    }.get(kind)
    rgb = np.array(colour, np.float32)
    if kind == "gradient":
        arr = rgb * x[..., None] + 255 * (1 - x[..., None]) * .3
    elif kind == "noise":
        arr = np.random.default_rng(7).integers(0, 256, (size, size, 1)) * np.ones(3) * .5 + rgb * .5
    else:
        arr = np.where(mask[..., None], rgb, np.array([245, 245, 240], np.float32))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8), "RGB")


def distinct_images(size: int = 96) -> dict[str, object]:
    """``{file name: PIL image}`` of :data:`DISTINCT` (12 pictures, ``size`` px square)."""
    return {f"{name}.png": _pattern(kind, colour, size) for name, (kind, colour) in DISTINCT.items()}


def write_images(folder: Path, images: dict[str, object] | Iterable) -> Path:
    """Save PIL images as RGB PNGs: a dict keeps its names (``sub/name.png`` in a sub-folder), a sequence
    becomes ``img00.png``, ``img01.png`` ..."""
    folder.mkdir(parents=True, exist_ok=True)
    named = images.items() if isinstance(images, dict) else ((f"img{i:02d}.png", im) for i, im in enumerate(images))
    for name, image in named:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        image.convert("RGB").save(folder / name)
    return folder


def near_duplicates(image, size: int = 96) -> dict[str, object]:
    """Two near-duplicates of ``image``: a larger copy and one with faint noise (``{label: PIL image}``)."""
    import numpy as np
    from PIL import Image

    noisy = np.asarray(image, np.int16) + np.random.default_rng(3).integers(-6, 7, (size, size, 3))
    return {"large": image.resize((size * 4 // 3, size * 4 // 3), Image.BICUBIC),
            "noisy": Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8), "RGB")}


def link_models(repo: Path, *model_dirs: Path) -> dict[str, str]:
    """A model repository at ``repo`` of symlinks to exported model folders; returns name -> path."""
    repo.mkdir(parents=True, exist_ok=True)
    for source in model_dirs:
        (repo / source.name).symlink_to(source.resolve(), target_is_directory=True)
    return {source.name: str(repo / source.name) for source in model_dirs}


IMAGE_LAYOUT = ("--fields", "folder:keyword,width:number,height:number")  # what T2I searches filter on


def build_image_index(*, folder: Path, base_url: str, repo: Path, workdir: Path, milvus: Path, mongo_uri: str,
                      scene: str, mongo_collection: str | None = None, version: str = "1",
                      push_args: tuple[str, ...] = ()) -> None:
    """Index ``folder`` (its files addressed as ``base_url``/name, which must answer) with the real jobs.

    Milvus alias ``scene`` -> ``scene_version`` in the Lite file ``milvus`` (``push_args``: more
    push-milvus flags, e.g. :data:`IMAGE_LAYOUT`); summaries in MongoDB
    ``mmsearch.<mongo_collection or scene>``. The Lite file must not be held by this process yet
    (the jobs run as processes).
    """
    run_job("prepare", "--workdir", str(workdir), "--source-kind", "images", "--source", str(folder),
            "--base-url", base_url)
    run_job("encode", "--workdir", str(workdir), "--repository", str(repo), "--model", IMAGE_MODEL)
    run_job("push-milvus", "--workdir", str(workdir), "--milvus-uri", str(milvus), "--scene", scene,
            "--version", version, "--repository", str(repo), "--model", IMAGE_MODEL, *push_args)
    run_job("push-mongo", "--workdir", str(workdir), "--mongo-uri", mongo_uri, "--collection",
            mongo_collection or scene)
    run_job("publish", "--milvus-uri", str(milvus), "--scene", scene, "--version", version)
