"""The model repository: the one owner of its layout, its manifests and its tower names.

Layout (Triton's model repository, plus the files our services read)::

    REPO/NAME/config.pbtxt                 Triton's model configuration
    REPO/NAME/<model_version>/model.onnx   the tower (pooling and L2 normalisation inside)
    REPO/NAME/manifest.json                a :class:`ModelManifest`; its presence marks a finished export
    REPO/NAME/tokenizer.json, ...          text towers: the tokenizer files
    REPO/NAME/preprocessor_config.json     image towers: the image processor

``REPO`` is a local folder, ``file://`` or ``s3://bucket/prefix``. An export
of model ``NAME`` has a text tower ``NAME`` and, for CLIP, an image tower
``NAME-image``: :func:`tower_name` is the only place that spelling lives (and
:func:`int8_name` of ``TOWER-int8``, the int8 copy ``export --int8`` writes).
Export writes through :meth:`ModelRepository.publish`; encode, push-milvus,
preprocess and serving read through :meth:`ModelRepository.manifest` and
:meth:`ModelRepository.folder`, so every reader finds the ONNX file of the
version the manifest names (``model_version``), never an assumed ``1``.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Mapping

from mmsearch.core import artifacts
from mmsearch.core.errors import MmsearchError

MANIFEST = "manifest.json"
CONFIG = "config.pbtxt"
ONNX_FILE = "model.onnx"
TOKENIZER_FILE = "tokenizer.json"
PREPROCESSOR_FILE = "preprocessor_config.json"
KINDS = ("text", "image")
# What a Milvus collection records of the manifest of the model that built it.
RECORD_KEYS = ("name", "tower", "family", "source", "dimension", "metric", "onnx_sha256", "towers", "quantization")


class ManifestError(MmsearchError):
    """A model that is not (fully) exported, or whose manifest is unreadable."""


def tower_name(model: str, kind: str) -> str:
    """The repository name of ``model``'s ``kind`` tower: ``NAME`` (text) or ``NAME-image``."""
    if kind not in KINDS:
        raise ValueError(f"tower kind {kind!r}: expected one of {', '.join(KINDS)}")
    return model if kind == "text" else f"{model}-image"


def int8_name(tower: str) -> str:
    """The repository name of the int8 copy of tower ``tower`` (``export --int8``): ``TOWER-int8``."""
    return f"{tower}-int8"


@dataclass(frozen=True)
class ModelManifest:
    """``manifest.json`` of one exported tower, typed."""

    name: str
    tower: str                    # "text" | "image"
    dimension: int
    onnx_sha256: str
    family: str = ""
    source: str = ""
    metric: str = "IP"
    normalized: bool = True
    opset: int = 0
    optimized: bool = False
    model_version: int = 1
    inputs: tuple[str, ...] = ()
    output: str = "embedding"
    max_length: int | None = None
    image_size: int | None = None
    parity: Mapping[str, Any] = field(default_factory=dict)
    towers: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # kind -> {name, onnx_sha256}
    quantization: Mapping[str, Any] | None = None  # an int8 copy (export --int8): how it was quantized

    @classmethod
    def from_dict(cls, raw: Any, where: str = MANIFEST) -> "ModelManifest":
        if not isinstance(raw, dict):
            raise ManifestError(f"{where}: not a JSON object; re-run `mmsearch job export`")
        missing = [k for k in ("name", "tower", "dimension", "onnx_sha256") if k not in raw]
        if missing:
            raise ManifestError(f"{where} lacks {', '.join(missing)}: re-run `mmsearch job export`")
        known = {f for f in cls.__dataclass_fields__}
        values = {k: v for k, v in raw.items() if k in known}
        values["inputs"] = tuple(values.get("inputs") or ())
        try:
            values["dimension"] = int(values["dimension"])
            values["model_version"] = int(values.get("model_version", 1))
        except (TypeError, ValueError):
            raise ManifestError(f"{where}: dimension and model_version must be integers") from None
        if values["tower"] not in KINDS:
            raise ManifestError(f"{where}: tower {values['tower']!r} is not one of {', '.join(KINDS)}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["inputs"] = list(self.inputs)
        return {k: v for k, v in out.items() if v is not None}

    def record(self) -> dict[str, Any]:
        """The part a collection records (which export built its vectors)."""
        full = self.to_dict()
        return {k: full[k] for k in RECORD_KEYS if k in full}

    @property
    def onnx_rel(self) -> str:
        """``<model_version>/model.onnx``, relative to the model folder."""
        return f"{self.model_version}/{ONNX_FILE}"


def model_mismatch(built: Mapping[str, Any], model: Mapping[str, Any], *, any_tower: bool = False) -> str | None:
    """Were these vectors built by ``model``? None when they were; otherwise what built them, a phrase
    that reads after "built by" (each caller adds what to do): ``model 'a' (onnx 0123456789ab), not 'b'
    (onnx ...)``.

    ``built`` is what a collection (or encode's output) records of the model that made its vectors and
    ``model`` the model at hand, both shaped like :meth:`ModelManifest.record` (``name``, ``onnx_sha256``,
    ``towers``). They match when the model.onnx is the same, byte for byte (the same ``onnx_sha256``; a
    missing hash never matches). With ``any_tower`` ``model`` may be any tower of the export that built
    them, found by name in ``built``'s ``towers`` (a query tower: CLIP's text tower searches what its image
    tower encoded); a record without ``towers`` names its one tower. Pure."""
    if any_tower:
        towers = dict(built.get("towers") or {})
        if not towers and built.get("name"):
            towers = {built.get("tower", "?"): built}
        entry = next((t for t in towers.values() if t.get("name") == model.get("name")), None)
        if entry is None:
            listed = ", ".join(f"{t.get('name')} ({kind})" for kind, t in towers.items()) or "an unrecorded model"
            return f"the export with towers {listed}, not {model.get('name')!r}"
        built = entry
    mine, theirs = model.get("onnx_sha256"), built.get("onnx_sha256")
    if mine and mine == theirs:
        return None
    return (f"model {built.get('name')!r} (onnx {str(theirs)[:12]}), "
            f"not {model.get('name')!r} (onnx {str(mine)[:12]})")


def read_manifest_file(path: Path) -> ModelManifest:
    try:
        raw = json.loads(path.read_text())
    except OSError:
        raise ManifestError(f"{path} not found: not a finished export (run `mmsearch job export`)") from None
    except ValueError as exc:
        raise ManifestError(f"{path}: not valid JSON ({exc}); re-run `mmsearch job export`") from None
    return ModelManifest.from_dict(raw, str(path))


@dataclass(frozen=True)
class ModelFolder:
    """One tower's folder on local disk (downloaded once when the repository is on S3)."""

    path: Path

    @cached_property
    def manifest(self) -> ModelManifest:
        return read_manifest_file(self.path / MANIFEST)

    @property
    def onnx_path(self) -> Path:
        """The ONNX file of the version the manifest names."""
        path = self.path / self.manifest.onnx_rel
        if not path.is_file():
            raise ManifestError(f"model {self.manifest.name!r}: no ONNX model at {path} "
                                f"(manifest model_version {self.manifest.model_version}); re-run export")
        return path

    @property
    def has_tokenizer(self) -> bool:
        return (self.path / TOKENIZER_FILE).is_file()

    @property
    def has_image_processor(self) -> bool:
        return (self.path / PREPROCESSOR_FILE).is_file()


class ModelRepository:
    """``REPO`` of exported towers (a path, ``file://`` or ``s3://``)."""

    def __init__(self, uri: str | os.PathLike):
        self.uri = str(uri)

    def __repr__(self) -> str:
        return f"ModelRepository({self.uri!r})"

    def model_uri(self, name: str) -> str:
        if not name or "/" in name or name.startswith("."):
            raise ManifestError(f"model name {name!r}: a name without '/' that does not start with '.'")
        return artifacts.join(self.uri, name)

    def has(self, name: str) -> bool:
        """Whether ``name`` is a finished export (its manifest exists)."""
        return artifacts.exists(artifacts.join(self.model_uri(name), MANIFEST))

    def manifest(self, name: str) -> ModelManifest:
        """``REPO/NAME/manifest.json`` (read without downloading the model)."""
        uri = artifacts.join(self.model_uri(name), MANIFEST)
        try:
            data = artifacts.read_bytes(uri)
        except artifacts.ArtifactError:
            raise ManifestError(f"model {name!r}: no finished export at {self.model_uri(name)} ({MANIFEST} "
                                f"missing); run `mmsearch job export --name ... --repository {self.uri}` "
                                "or check the model name") from None
        try:
            raw = json.loads(data)
        except ValueError as exc:
            raise ManifestError(f"{uri}: not valid JSON ({exc}); re-run `mmsearch job export`") from None
        return ModelManifest.from_dict(raw, uri)

    def folder(self, name: str) -> ModelFolder:
        """The model folder on local disk; ManifestError when ``name`` is not a finished export."""
        self.manifest(name)  # a clear error before any download
        return ModelFolder(artifacts.materialize(self.model_uri(name)))

    def publish(self, staged: Path, name: str) -> None:
        """Make ``staged`` the folder of ``name``: readers see the old export, nothing, or the new one."""
        artifacts.publish_tree(staged, self.model_uri(name), marker=MANIFEST)
