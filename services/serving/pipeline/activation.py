"""Activation: a validated experiment config becomes the immutable :class:`Active` that serves.

:func:`activate` checks every arm of every scene against the backends and
refuses the config (raises) unless each arm's preprocess model is ready (its
tokenizer loaded in serving for text with ``preprocess: inline``; loaded by
the preprocess service for images and for ``preprocess: service``), its
encoder loads, its encoder is a tower of the export that built its
collection (:func:`check_consistency`) or that export's tower of the same
kind is in the model repository and answers a canary query (a version built
by another model: it serves the collection, ``served_by``, see
:mod:`mmsearch.services.serving.pipeline.migration`), and its collection holds the scene's
declared fields and, for a ``bm25`` or ``hybrid`` retriever, the BM25 text
(:func:`check_layout`). ``needs`` records those layout requirements per
collection name, so a publish that moves the name to a version without them
is not followed. The preprocess service is asked only when some arm uses it:
a config whose arms all tokenize inline activates (and serves, see
:mod:`mmsearch.services.serving.health`) without it. The encoder's
manifest is read from ``MMSEARCH_MODEL_REPOSITORY`` for either backend, so
an arm on Triton needs that setting to name the repository Triton loads.

An :class:`Active` is never changed: a request holds the one it started
with; a reload or an alias move swaps in a new one (``routes`` is a frozen
mapping from the config's collection names to the concrete collections
searched, see :mod:`mmsearch.services.serving.pipeline.routes`; ``records`` what each one's
state says: documents, sync generation (which keys the summary cache with the
concrete collection, :meth:`Active.version`; see
:mod:`mmsearch.services.serving.backends.summary_cache`), the index (its recorded search params,
:meth:`Active.search_params`), the evaluation it was published on).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Mapping

from mmsearch.core.fields import CollectionLayout, FieldError, FieldSpec
from mmsearch.core.model_repository import ModelManifest, model_mismatch
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.config.experiments import ArmSpec, Experiments, Scene, TowerSpec


class ActivationError(ValueError):
    """An arm that cannot serve; the message names the scene, the arm and why."""


class ConsistencyError(ActivationError):
    """An arm's encoder is not the model that built its collection."""


def check_consistency(encoder: str, encoder_manifest: ModelManifest, collection: str,
                      collection_manifest: Mapping[str, Any]) -> None:
    """Raise :class:`ConsistencyError` unless ``encoder``'s model.onnx is a tower of the export that built ``collection``.

    The collection records the manifest of the document tower that encoded it; the query encoder
    must be one of the towers of that export, byte for byte
    (:func:`mmsearch.core.model_repository.model_mismatch`), with the same dimension; or an int8 copy of one
    of them (``export --int8``: its manifest's quantization names the fp32 ``source`` tower, whose vectors it
    matches within the int8 gate). Pure.
    """
    other_model = model_mismatch(collection_manifest, {"name": encoder, "onnx_sha256": encoder_manifest.onnx_sha256},
                                 any_tower=True)
    source = (encoder_manifest.quantization or {}).get("source")
    if other_model and source:
        other_model = model_mismatch(collection_manifest, source, any_tower=True) and other_model
    if other_model:
        raise ConsistencyError(
            f"encoder {encoder!r} does not match collection {collection!r}: the collection was built by "
            f"{other_model}; use a tower of that export, or re-index with {encoder!r}"
        )
    dim_b = collection_manifest.get("dimension")
    if dim_b and encoder_manifest.dimension != int(dim_b):
        raise ConsistencyError(f"encoder {encoder!r} gives {encoder_manifest.dimension}-dim vectors but "
                               f"collection {collection!r} holds {dim_b}-dim ones")


class LayoutError(ConsistencyError):
    """A collection without a field or the BM25 text the config needs."""


@dataclass(frozen=True)
class Needs:
    """What a config needs a collection's layout to hold."""

    fields: frozenset[tuple[str, str]] = frozenset()  # (name, type)
    lexical: bool = False
    cutoff: bool = False  # a calibrated score threshold (an arm's min_score: auto)

    def union(self, fields: Mapping[str, FieldSpec], lexical: bool, cutoff: bool = False) -> "Needs":
        return Needs(self.fields | {(f.name, f.type) for f in fields.values()}, self.lexical or lexical,
                     self.cutoff or cutoff)


def calibrated(collection_manifest: Mapping[str, Any]) -> float | None:
    """The score threshold ``evaluate --calibrate-precision`` recorded with this version (None: none). Pure."""
    score = (collection_manifest.get("cutoff") or {}).get("score")
    return float(score) if isinstance(score, (int, float)) and not isinstance(score, bool) else None


def check_layout(collection: str, collection_manifest: Mapping[str, Any], needs: Needs) -> None:
    """Raise :class:`LayoutError` unless ``collection`` holds every needed field (same type) and, when
    needed, the BM25 text. Pure."""
    recorded = collection_manifest.get("layout") or {}
    try:
        layout = CollectionLayout.from_record(recorded.get("fields"), recorded.get("lexical"))
    except FieldError as exc:
        raise LayoutError(f"collection {collection!r}: {exc}") from None
    have = {f.name: f.type for f in layout.fields}
    for name, kind in sorted(needs.fields):
        if have.get(name) != kind:
            found = (f"holds it as {have[name]}" if name in have
                     else f"has no field {name!r} (its fields: {sorted(have) or 'none'})")
            raise LayoutError(f"the scene declares {kind} field {name!r} but collection {collection!r} {found}; "
                              f"re-index with `mmsearch job push-milvus --fields {name}:{kind}` or change the "
                              "scene's fields")
    if needs.lexical and layout.lexical is None:
        raise LayoutError(f"a bm25/hybrid retriever needs BM25 text but collection {collection!r} has none; re-index "
                          "with `mmsearch job push-milvus --bm25-fields ...` or use retriever: dense")
    if needs.cutoff and calibrated(collection_manifest) is None:
        raise LayoutError(f"an arm cuts at the calibrated score (min_score: auto) but collection {collection!r} "
                          "recorded none; run `mmsearch job evaluate --calibrate-precision P` on it, or give "
                          "min_score a number")


@dataclass(frozen=True)
class Active:
    """A config that passed validation and activation (immutable)."""

    experiments: Experiments
    encoders: Mapping[tuple[str, str], Any]   # (backend, model) -> encoder with .infer(inputs)
    routes: Mapping[str, str]                 # config collection name -> concrete collection searched
    users: Mapping[str, frozenset[str]]       # config collection name -> encoder models querying it
    records: Mapping[str, Mapping[str, Any]] = field(default_factory=lambda: MappingProxyType({}))  # name -> record
    needs: Mapping[str, Needs] = field(default_factory=lambda: MappingProxyType({}))  # name -> layout it must hold
    preprocess_service: bool = True           # whether some arm sends queries to the preprocess service
    # (config collection name, configured encoder) -> the tower serving it instead: a version built by another
    # model (:mod:`mmsearch.services.serving.pipeline.migration`); absent: the arm's own
    served_by: Mapping[tuple[str, str], TowerSpec] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def scenes(self) -> Mapping[str, Scene]:
        return self.experiments.scenes

    def with_routes(self, routes: Mapping[str, str], records: Mapping[str, Mapping[str, Any]] | None = None) -> "Active":
        return replace(self, routes=MappingProxyType(dict(routes)),
                       records=MappingProxyType(dict(self.records if records is None else records)))

    def tower(self, collection: str, tower: TowerSpec | None) -> TowerSpec | None:
        """The tower that serves an arm's ``tower`` on config collection name ``collection``: its own, or the
        served version's model's (a model migration)."""
        return self.served_by.get((collection, tower.encoder), tower) if tower is not None else None

    def version(self, collection: str) -> tuple[str, int]:
        """(concrete collection, generation) of the documents behind config collection name ``collection``:
        what the summary cache keys on (a sync bumps the generation, a publish moves the route; live writes
        evict their ids instead, :mod:`mmsearch.services.serving.pipeline.freshness`)."""
        rec = self.records.get(collection) or {}
        return (self.routes.get(collection, collection), int(rec.get("generation") or 0))

    def search_params(self, collection: str) -> dict[str, Any]:
        """The search params the index of ``collection``'s served version recorded (push-milvus
        ``--index-type auto``), for arms that set no match params; empty when it recorded none."""
        return dict(((self.records.get(collection) or {}).get("index") or {}).get("search_params") or {})

    def cutoff(self, collection: str) -> float | None:
        """The calibrated score threshold of ``collection``'s served version (None: it recorded none)."""
        return calibrated(self.records.get(collection) or {})


def uses_service(spec: ArmSpec, kind: str) -> bool:
    """Whether the arm's ``kind`` ("text" | "image") queries go to the preprocess service. Pure."""
    return kind == "image" or spec.preprocess == "service"


def towers(spec: ArmSpec) -> tuple[tuple[str, TowerSpec | None], ...]:
    return ("text", spec.query.text), ("image", spec.query.image)


async def activate(experiments: Experiments, backends: Backends, timeout: float) -> Active:
    """Load encoders and check every arm against its dependencies; raise to refuse the config."""
    from mmsearch.services.serving.pipeline import migration  # it builds on this module

    specs = experiments.arm_specs()
    service = any(uses_service(spec, kind) for _, _, spec in specs for kind, tower in towers(spec) if tower)
    models = await backends.preprocess.models(timeout) if service else set()
    encoders: dict[tuple[str, str], Any] = {}
    collections: dict[str, dict] = {}
    checked: set[tuple[str, str, str]] = set()
    users: dict[str, set[str]] = {}
    needs: dict[str, Needs] = {}
    served_by: dict[tuple[str, str], TowerSpec] = {}
    for scene, label, spec in specs:
        where = f"scene {scene!r} arm {label}"
        collection = spec.match.collection
        needs[collection] = needs.get(collection, Needs()).union(experiments.scenes[scene].fields,
                                                                 spec.match.retriever != "dense", spec.auto_cutoff)
        for kind, tower in towers(spec):
            if tower is None:
                continue
            if not uses_service(spec, kind):
                try:
                    await backends.inline.prepare(tower.preprocess)
                except Exception as exc:
                    raise ActivationError(f"{where}: preprocess: inline: {exc}") from None
            elif tower.preprocess not in models:
                raise ActivationError(f"{where}: preprocess model {tower.preprocess!r} is not loaded by the "
                                      f"preprocess service (it has {sorted(models)})")
            try:
                encoders[(spec.encoder_backend, tower.encoder)] = await backends.encoders.get(spec.encoder_backend,
                                                                                               tower.encoder)
                manifest = await backends.manifests(tower.encoder)
            except Exception as exc:
                raise ActivationError(f"{where}: encoder {tower.encoder!r} ({spec.encoder_backend}): {exc}") from None
            collection = spec.match.collection
            users.setdefault(collection, set()).add(tower.encoder)
            if (spec.encoder_backend, tower.encoder, collection) in checked:
                continue
            if collection not in collections:
                collections[collection] = await backends.matcher.manifest(collection)
            try:  # the served version's own model when it was built by another one (a migration)
                chosen = migration.serving_tower(tower.encoder, manifest, kind, collection, collections[collection])
                if chosen != tower.encoder:
                    encoders[(spec.encoder_backend, chosen)] = await migration.load_tower(
                        backends, spec, kind, chosen, collection, collections[collection], timeout, tower.encoder)
                    served_by[(collection, tower.encoder)] = migration.served(tower, chosen)
            except ConsistencyError as exc:
                raise ConsistencyError(f"{where}: {exc}") from None
            checked.add((spec.encoder_backend, tower.encoder, collection))
        try:
            check_layout(collection, collections[collection], needs[collection])
        except LayoutError as exc:
            raise LayoutError(f"{where}: {exc}") from None
    routes = {name: m.get("collection", name) for name, m in collections.items()}
    return Active(experiments, MappingProxyType(encoders), MappingProxyType(routes),
                  MappingProxyType({k: frozenset(v) for k, v in users.items()}),
                  MappingProxyType({name: record(m) for name, m in collections.items()}), MappingProxyType(needs),
                  preprocess_service=service, served_by=MappingProxyType(served_by))


RECORD_FIELDS = ("collection", "scene", "version", "count", "generation", "changed", "evaluation", "published",
                 "index", "writes", "cutoff", "text_template", "text_field")


def record(manifest: Mapping[str, Any]) -> Mapping[str, Any]:
    """What serving keeps of a collection's manifest and state (see ``read_manifest``). Pure."""
    return MappingProxyType({k: manifest[k] for k in RECORD_FIELDS if k in manifest})
