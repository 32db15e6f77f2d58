"""The experiment config: a typed YAML schema and arm resolution.

Schema (MetaSpore's scene -> ordered layers -> experiments, in our own terms)::

    scenes:
      t2t:                        # the SearchRequest.scene
        modality: text            # what the index holds: text | image
        note: Untrained towers    # optional: one line of plain text the page shows under the scene picker
        defaults:                 # a complete arm: every field below
          query:
            text: {model: minilm}                 # preprocess model = encoder model unless
            # image: {model: x-image, preprocess_model: ...}   # preprocess_model is given;
            # precision: int8 runs the tower's int8 copy (model-int8)
          preprocess: inline                      # text queries: inline (tokenized in serving) | service
          encoder_backend: embedded               # embedded (onnxruntime) | triton
          match: {collection: stdlib, top_k: 10, candidates: 50, metric: IP, params: {},
                  retriever: dense,                  # dense | bm25 | hybrid (both, fused)
                  fusion: {name: rrf, params: {k: 60}}}   # hybrid: rrf {k} | weighted {weights, norm};
                                                          # default: the tuned TUNED_FUSION
          rank: {name: score_order, params: {}}
          diversify: {name: mmr, params: {lambda: 0.7}}   # used when the request sets diversify
          summary: {database: mmsearch, collection: stdlib, fields: [question, answer]}
          # collection: "{collection}" reads the documents of the version searched (stdlib_3 ...)
        fields:                   # optional: what requests may filter (and facet) on; every arm's
          - {name: category, type: keyword}   # collection must hold them (push-milvus --fields)
        layers:                   # ordered; each assigns one arm per request
          - name: ranking
            salt: ranking-v1      # optional (default "scene/layer"); change it to reshuffle users
            default: control      # optional (default: the first arm): the arm for requests without user id
            arms:
              - {name: control, weight: 50}
              - name: threshold
                weight: 50
                overrides: {rank: {name: score_threshold, params: {min_score: 0.3}}}

Decisions:
- An arm is a *partial override*. A request's arm spec is the scene's ``defaults`` with the chosen arm of
  each layer merged on top, in layer order (a later layer wins over an earlier one). Merging is recursive for
  mappings, except that a mapping under a key named ``params`` replaces the previous one whole (parameters
  belong to one ranker or index type, so mixing two sets would be meaningless); lists and scalars replace.
- Every combination of arms is resolved and validated at load, so a bad override is refused before it can
  serve (at most ``MAX_COMBINATIONS`` per scene).
- A scene's ``fields`` (:class:`mmsearch.core.fields.FieldSpec`: name, type keyword | number | bool, and
  ``source``, the corpus key push-milvus reads) and its ``note`` belong to the scene, not to an arm: the
  filters a request may carry do not depend on its bucket. Activation refuses a config whose collection
  lacks one, or lacks the BM25 text an arm's ``bm25``/``hybrid`` retriever needs.
- Unknown keys are errors (typos do not pass silently); every error names
  its path in the file, e.g. ``scenes.t2t.layers[0].arms[1].weight``.
- The file is watched and reloaded by
  :class:`mmsearch.services.serving.config.store.ConfigStore`.
"""
from __future__ import annotations

import copy
import itertools
import math
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, Mapping

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from mmsearch.core.fields import FieldSpec
from mmsearch.core.model_repository import int8_name
from mmsearch.services.serving.config import choices


MAX_COMBINATIONS = 256
MAX_NOTE = 300  # characters of a scene's note


class ConfigError(ValueError):
    """An experiment config that cannot be used; the message says where and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TowerSpec(_Strict):
    """How one kind of query becomes a vector."""

    model: str = Field(min_length=1, description="Encoder model name (REPO/NAME, or Triton model NAME).")
    preprocess_model: str | None = Field(None, description="Preprocess model name; default: ``model``.")
    precision: Literal["fp32", "int8"] = Field(
        "fp32", description="fp32: the tower ``model``; int8: its int8 copy ``model``-int8 (``export --int8``, "
                            "gated against fp32), tokenized as ``model``: an arm setting, so int8 is A/B-able.")

    @property
    def preprocess(self) -> str:
        return self.preprocess_model or self.model

    @property
    def encoder(self) -> str:
        """The encoder model this tower runs: ``model``, or its int8 copy."""
        return int8_name(self.model) if self.precision == "int8" else self.model


class QuerySpec(_Strict):
    text: TowerSpec | None = None
    image: TowerSpec | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> "QuerySpec":
        if self.text is None and self.image is None:
            raise ValueError("give query.text and/or query.image")
        return self


TUNED_FUSION = {"name": "weighted", "params": {"weights": {"dense": 0.7, "bm25": 0.3}, "norm": "minmax"}}
"""The default fusion, tuned with bench/relevance.py on the stdlib corpus (MiniLM on docstrings, BM25 on name +
docstring): chosen on the labelled set's ``tune`` queries, judged on its ``held-out`` ones, where it ranked better
than dense alone and than RRF, which found fewer answers than dense (figures in docs/benchmarks.md)."""


class _Choice(_Strict):
    """A thing chosen by name with its parameters, checked against a table of :mod:`choices` at load."""

    KIND: ClassVar[str]
    TABLE: ClassVar[Mapping[str, choices.Validator]]
    name: str
    params: dict[str, Any] | None = None

    @model_validator(mode="after")
    def _known(self):
        self.checked_params  # raises ValueError naming the name or parameter at fault
        return self

    @property
    def given(self) -> dict[str, Any]:
        return self.params or {}

    @property
    def checked_params(self) -> dict[str, Any]:
        return choices.checked(self.KIND, self.TABLE, self.name, self.given)


class FusionSpec(_Choice):
    """How a ``hybrid`` retriever fuses the dense and BM25 lists (:mod:`mmsearch.services.serving.pipeline.fusion`); default
    :data:`TUNED_FUSION`."""

    KIND, TABLE = "fusion", choices.FUSIONS
    name: str = TUNED_FUSION["name"]
    params: dict[str, Any] | None = Field(None, description="Default: the tuned weights for weighted, k=60 for rrf.")

    @property
    def given(self) -> dict[str, Any]:
        if self.params is not None:
            return self.params
        return copy.deepcopy(TUNED_FUSION["params"]) if self.name == TUNED_FUSION["name"] else {}


class MatchSpec(_Strict):
    collection: str = Field(min_length=1, description="Milvus collection or alias.")
    top_k: int = Field(10, ge=1, le=16384, description="Page size when the request's top_k is 0.")
    candidates: int = Field(50, ge=1, le=16384,
                            description="Pool fetched for rankers that re-rank (MMR), by each retriever of a hybrid "
                                        "search, and counted by facets.")
    metric: Literal["IP", "COSINE", "L2"] = "IP"
    params: dict[str, Any] = Field(default_factory=dict, description="Index search params, e.g. {nprobe: 16}; "
                                   "empty: those the collection's index recorded (push-milvus --index-type auto).")
    retriever: Literal["dense", "bm25", "hybrid"] = Field(
        "dense", description="dense (vectors), bm25 (full text), hybrid (both, fused); text queries only: "
                             "image and more-like-this queries run dense.")
    fusion: FusionSpec = FusionSpec()


class RankSpec(_Choice):
    KIND, TABLE = "ranker", choices.RANKERS
    params: dict[str, Any] = Field(default_factory=dict)


class SummarySpec(_Strict):
    database: str = Field("mmsearch", min_length=1)
    collection: str = Field(min_length=1, description='Document collection; "{collection}" stands for the Milvus '
                            'collection the match stage searched (summaries kept per index version).')
    fields: list[str] | None = Field(None, description="Fields returned; default: all but _id.")


class ArmSpec(_Strict):
    """Everything one request's pipeline does (the merged result)."""

    query: QuerySpec
    preprocess: Literal["inline", "service"] = Field(
        "inline", description="Where text queries are tokenized: inline (in serving, with the tokenizer.json of "
                              "REPO/<preprocess model> the preprocess service loads too: the same ids, no hop) or "
                              "service (the preprocess service, batched). Image queries always go to the service.")
    encoder_backend: Literal["embedded", "triton"] = "embedded"
    match: MatchSpec
    rank: RankSpec = RankSpec(name="score_order")
    diversify: RankSpec = RankSpec(name="mmr", params={"lambda": 0.7})
    summary: SummarySpec

    @property
    def auto_cutoff(self) -> bool:
        """Whether a ranker of this arm cuts at the index version's calibrated score (``min_score: auto``)."""
        return any(r.checked_params.get("min_score") == choices.AUTO for r in (self.rank, self.diversify))

    @model_validator(mode="after")
    def _calibrated_dense(self) -> "ArmSpec":
        if self.auto_cutoff and self.query.text is not None and self.match.retriever != "dense":
            raise ValueError(f"min_score: auto is calibrated on the dense score, not a {self.match.retriever} "
                             "arm's: give min_score a number, or use retriever: dense")
        return self


class ArmDef(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(ge=0)
    overrides: dict[str, Any] = Field(default_factory=dict)


def repeated(names: list[str]) -> list[str]:
    """The names that occur more than once, sorted. Pure."""
    return sorted({n for n in names if names.count(n) > 1})


class LayerDef(_Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    salt: str | None = None
    default: str | None = None
    arms: list[ArmDef] = Field(min_length=1)

    @model_validator(mode="after")
    def _arms(self) -> "LayerDef":
        names = [a.name for a in self.arms]
        dupes = repeated(names)
        if dupes:
            raise ValueError(f"layer {self.name!r} has duplicate arm names {dupes}")
        if sum(a.weight for a in self.arms) <= 0:
            raise ValueError(f"layer {self.name!r}: arm weights must sum to more than 0")
        if self.default is not None and self.default not in names:
            raise ValueError(f"layer {self.name!r}: default {self.default!r} is not one of its arms {names}")
        return self


class SceneDef(_Strict):
    modality: Literal["text", "image"]
    note: str = Field("", description=f"One line of plain text (at most {MAX_NOTE} characters) that ListScenes and "
                                      "the page show with the scene, e.g. that its image tower is untrained.")
    defaults: dict[str, Any]
    fields: list[FieldSpec] = Field(default_factory=list, description="Fields requests may filter and facet on.")
    layers: list[LayerDef] = Field(default_factory=list)

    @field_validator("note")
    @classmethod
    def _one_line(cls, value: str) -> str:
        value = value.strip()  # a YAML block scalar's final line break
        if "\n" in value or "\r" in value:
            raise ValueError("a note is one line of plain text: remove its line breaks")
        if len(value) > MAX_NOTE:
            raise ValueError(f"a note is at most {MAX_NOTE} characters, this one has {len(value)}: shorten it")
        return value

    @model_validator(mode="after")
    def _layers(self) -> "SceneDef":
        dupes = repeated([layer.name for layer in self.layers])
        if dupes:
            raise ValueError(f"duplicate layer names {dupes}")
        dupes = repeated([f.name for f in self.fields])
        if dupes:
            raise ValueError(f"duplicate field names {dupes}")
        return self


class ExperimentsDef(_Strict):
    scenes: dict[str, SceneDef] = Field(min_length=1)

    @field_validator("scenes")
    @classmethod
    def _scene_names(cls, value: dict[str, SceneDef]) -> dict[str, SceneDef]:
        for name in value:
            if not name or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(f"scene name {name!r} must be letters, digits, - or _")
        return value


def merge(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Recursive merge; ``params`` mappings and non-mappings replace (see module doc)."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if key != "params" and isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass(frozen=True)
class Layer:
    name: str
    salt: str
    arms: tuple[str, ...]
    weights: tuple[float, ...]
    default: str

    def as_tuple(self) -> tuple[str, str, tuple[str, ...], tuple[float, ...], str]:
        return self.name, self.salt, self.arms, self.weights, self.default  # what bucketing.assign takes


@dataclass(frozen=True)
class Scene:
    name: str
    modality: str
    layers: tuple[Layer, ...]
    arms: Mapping[tuple[str, ...], ArmSpec]  # arm names, one per layer in order -> merged spec
    fields: Mapping[str, FieldSpec] = field(default_factory=dict)  # filterable fields by name, declared order
    note: str = ""  # one line of plain text shown with the scene (e.g. that a tower is untrained)

    @property
    def default_arm(self) -> ArmSpec:
        return self.arms[tuple(layer.default for layer in self.layers)]

    @property
    def image_query(self) -> bool:
        return self.default_arm.query.image is not None


@dataclass(frozen=True)
class Experiments:
    scenes: Mapping[str, Scene]

    def arm_specs(self) -> list[tuple[str, str, ArmSpec]]:
        """(scene, arm label, spec) for every resolved combination."""
        return [(scene.name, arm_label(scene.layers, combo), spec)
                for scene in self.scenes.values() for combo, spec in scene.arms.items()]


def arm_label(layers: tuple[Layer, ...], combo: tuple[str, ...]) -> str:
    """``layer=arm`` pairs joined by ``,`` (``default`` for a scene without layers)."""
    return ",".join(f"{layer.name}={arm}" for layer, arm in zip(layers, combo)) or "default"


def _where(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def _describe(exc: ValidationError, prefix: str = "") -> str:
    lines = []
    for err in exc.errors():
        where = _where(tuple(err.get("loc", ())))
        where = f"{prefix}.{where}" if prefix and where != "(top level)" else (prefix or where)
        msg = err.get("msg", "").removeprefix("Value error, ")
        lines.append(f"{where}: {msg}")
    return "; ".join(lines)


def resolve(definition: ExperimentsDef) -> Experiments:
    """Merge and validate every arm combination of every scene."""
    scenes = {}
    for scene_name, scene in definition.scenes.items():
        layers = tuple(Layer(name=layer.name, arms=tuple(a.name for a in layer.arms),
                             salt=layer.salt if layer.salt is not None else f"{scene_name}/{layer.name}",
                             weights=tuple(a.weight for a in layer.arms),
                             default=layer.default or layer.arms[0].name) for layer in scene.layers)
        count = math.prod(len(layer.arms) for layer in scene.layers)
        if count > MAX_COMBINATIONS:
            raise ConfigError(f"scenes.{scene_name}: {count} arm combinations across layers; "
                              f"at most {MAX_COMBINATIONS}")
        arms: dict[tuple[str, ...], ArmSpec] = {}
        for combo in itertools.product(*(layer.arms for layer in scene.layers)):
            merged = dict(scene.defaults)
            for arm in combo:
                merged = merge(merged, arm.overrides)
            names = tuple(a.name for a in combo)
            try:
                arms[names] = ArmSpec.model_validate(merged)
            except ValidationError as exc:
                raise ConfigError(f"scenes.{scene_name} arm {arm_label(layers, names)} (defaults + overrides): "
                                  f"{_describe(exc)}") from None
        specs = list(arms.values())
        kinds = {(s.query.text is not None, s.query.image is not None) for s in specs}
        if len(kinds) > 1:
            raise ConfigError(f"scenes.{scene_name}: every arm must accept the same query kinds (text/image)")
        scenes[scene_name] = Scene(scene_name, scene.modality, layers, arms, {f.name: f for f in scene.fields},
                                   scene.note)
    return Experiments(scenes)


def parse_config(text: str | bytes, source: str = "<config>") -> Experiments:
    """YAML text -> validated :class:`Experiments`, or :class:`ConfigError` naming the problem."""
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{source}: not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{source}: the top level must be a mapping with a 'scenes' key")
    try:
        definition = ExperimentsDef.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(f"{source}: {_describe(exc)}") from None
    try:
        return resolve(definition)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None
