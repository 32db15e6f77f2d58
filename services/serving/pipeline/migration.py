"""Model migration while serving: a version built by another model is served by that model's query tower.

When a scene's alias moves to a version whose collection record names
another export than the arm's encoder (a model change: ``spec.model`` of an
IndexJob), the arm cannot query it with its own encoder (the vectors would
not be comparable). :func:`serving_tower` decides, purely from the
collection record and the arm's encoder, which tower serves the collection:
the arm's own when it is a tower of the export that built it
(:func:`~mmsearch.services.serving.pipeline.activation.check_consistency`),
else the collection export's tower of the same kind (``text`` or
``image``). :func:`load_tower` then loads that tower from the backends (the
encoder pool: an onnxruntime session on the model repository's copy, or
Triton's model of that name when it is ready), checks that the repository's
copy is byte for byte the tower that built the collection, and warms it: a
canary query through the arm's preprocessing and the encoder. Only then may
the route move (:mod:`mmsearch.services.serving.pipeline.routes`); a tower
missing from the repository, or another copy of it, is refused and the old
version keeps serving.

The choice is part of the :class:`~mmsearch.services.serving.pipeline.activation.Active`
(``towers``: per collection name and configured encoder, the tower that
serves it), so a search in flight finishes with the Active, and the
encoder, it started with. A restart on a migrated version makes the same
choice at activation. :class:`Releases` closes an encoder no Active uses any
more, once every search that started before it went out of use has ended,
except the spare (:func:`spare_after`): the towers the latest route move
left stay loaded, with their inference cache, so a rollback finds its tower
loaded and warm (its canary is then one cached encode, no onnxruntime
session is created while searches run). The spare is released when the next
move leaves other towers, or none (a move within one model: its rollback
needs no other tower), so serving holds at most the towers it held across
that switch, which it needed anyway to finish the searches in flight on the
old one. No time bound: a rollback may come hours after a publish, once its
figures under real traffic are in.

:class:`Shadows` moves one cost of a switch to the registration of the
version: loading a tokenizer holds Python's GIL for the whole load (50 to
70 ms for a real tokenizer.json), so a load at the move stalls every search
in flight. Each route-watcher round lists Milvus's collections and reads the
record of each one not seen yet that is a version of a collection name the
config searches (``<name>_<version>``); where another export built it, the
inline tokenizer of the text tower that would serve it
(:func:`shadow_tokenizers`) is loaded then, while the shadow version is
built and evaluated, before any publish. The encoder itself is still
created at the move (a version that fails its gate is never served, so it
holds no onnxruntime session; creating one releases the GIL). A tokenizer is
kept for the life of the process, as every inline tokenizer is; one that
cannot be loaded is logged (the publish would be refused the same way).
"""
from __future__ import annotations

import logging
from typing import Any, Iterator, Mapping

import numpy as np

from mmsearch.core.model_repository import ModelManifest
from mmsearch.services.serving.backends.bundle import Backends
from mmsearch.services.serving.config.experiments import ArmSpec, Experiments, TowerSpec
from mmsearch.services.serving.pipeline.activation import Active, ConsistencyError, check_consistency, uses_service

log = logging.getLogger(__name__)
CANARY_TEXT = "canary query"
WARM_TIMEOUT_S = 10.0


def serving_tower(configured: str, manifest: ModelManifest, kind: str, collection: str,
                  collection_manifest: Mapping[str, Any]) -> str:
    """The tower that serves ``collection`` for an arm whose ``kind`` tower is encoder ``configured``
    (``manifest``: its manifest): ``configured`` when it is a tower of the export that built the collection,
    else that export's ``kind`` tower (the caller loads it and checks its bytes). Raises
    :class:`ConsistencyError` when the collection records no ``kind`` tower, or one of the same name (another
    copy of the arm's model: re-index, nothing to migrate to). Pure."""
    try:
        check_consistency(configured, manifest, collection, collection_manifest)
        return configured
    except ConsistencyError as exc:
        refused = exc
    towers = dict(collection_manifest.get("towers") or {})
    if not towers and collection_manifest.get("name"):
        towers = {collection_manifest.get("tower", kind): collection_manifest}
    name = (towers.get(kind) or {}).get("name")
    if not name or name == configured:
        raise refused
    return str(name)


def served(tower: TowerSpec, name: str) -> TowerSpec:
    """The arm's tower as it serves with tower ``name`` of another export: encoded and preprocessed by it,
    fp32 (the int8 copy an arm asked for is of its own model). Pure."""
    return tower if name == tower.encoder else TowerSpec(model=name)


def arm_towers(experiments: Experiments, collection: str) -> Iterator[tuple[ArmSpec, str, TowerSpec]]:
    """(arm, kind, tower) of every query tower that searches config collection name ``collection``, once per
    (backend, encoder). Pure."""
    seen = set()
    for _, _, spec in experiments.arm_specs():
        if spec.match.collection != collection:
            continue
        for kind, tower in (("text", spec.query.text), ("image", spec.query.image)):
            if tower is not None and (spec.encoder_backend, tower.encoder) not in seen:
                seen.add((spec.encoder_backend, tower.encoder))
                yield spec, kind, tower


def canary_inputs(manifest: ModelManifest) -> dict[str, np.ndarray]:
    """A blank image for an image tower's canary encode (its input at its size). Pure."""
    size = manifest.image_size or 224
    return {(manifest.inputs or ("pixel_values",))[0]: np.zeros((1, 3, size, size), dtype=np.float32)}


async def load_tower(backends: Backends, spec: ArmSpec, kind: str, name: str, collection: str,
                     collection_manifest: Mapping[str, Any], timeout: float = WARM_TIMEOUT_S,
                     instead_of: str = "") -> Any:
    """Load tower ``name`` (the encoder serving ``collection`` in place of the arm's ``instead_of``), check it is
    byte for byte the tower that built it, and warm it with a canary query; the encoder, or ConsistencyError
    saying why not."""
    try:
        manifest = await backends.manifests(name)
    except Exception as exc:
        raise ConsistencyError(f"encoder {instead_of or name!r} does not match collection {collection!r}, built by "
                               f"the export of tower {name!r}, and the model repository serving reads does not hold "
                               f"{name!r} ({exc}): export that model into it, or re-index with {instead_of!r}") from None
    check_consistency(name, manifest, collection, collection_manifest)
    try:
        encoder = await backends.encoders.get(spec.encoder_backend, name)
        if kind == "image" or uses_service(spec, kind):
            if name not in await backends.preprocess.models(timeout):
                raise ConsistencyError(f"the preprocess service has not loaded model {name!r}")
        if kind == "image":
            inputs = canary_inputs(manifest)
        else:
            preprocessor = backends.preprocess if uses_service(spec, kind) else backends.inline
            inputs = await preprocessor.text(name, CANARY_TEXT, timeout)
        vector = np.asarray(await encoder.infer(inputs))
    except ConsistencyError:
        raise
    except Exception as exc:
        raise ConsistencyError(f"tower {name!r} ({spec.encoder_backend}) did not load or answer its canary "
                               f"query: {exc}") from None
    if vector.shape[-1] != manifest.dimension:
        raise ConsistencyError(f"tower {name!r} gave {vector.shape[-1]}-dim vectors for its canary query, its "
                               f"manifest says {manifest.dimension}")
    return encoder


def shadow_tokenizers(experiments: Experiments, name: str, collection: str, collection_manifest: Mapping[str, Any],
                      manifests: Mapping[str, ModelManifest]) -> set[str]:
    """The inline tokenizers that serving ``collection`` (a version of config collection name ``name``) would
    load: of each text tower tokenized in serving (``preprocess: inline``) that searches ``name``, the tower of
    another export that built ``collection``; none for a version of the arms' own models, or one no tower of
    theirs could serve (the move would be refused). ``manifests``: each configured encoder's. Pure."""
    wanted = set()
    for spec, kind, tower in arm_towers(experiments, name):
        if uses_service(spec, kind):
            continue
        try:
            chosen = serving_tower(tower.encoder, manifests[tower.encoder], kind, collection, collection_manifest)
        except ConsistencyError:
            continue
        if chosen != tower.encoder:
            wanted.add(served(tower, chosen).preprocess)
    return wanted


class Shadows:
    """Loads the inline tokenizers that versions built by another model will need, when they are registered
    (see the module doc). ``seen``: the collections whose record was read; ``prepared``: the tokenizers loaded."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.prepared: set[str] = set()

    async def round(self, active: Active | None, backends: Backends) -> None:
        """Read the versions registered since the last round and load the tokenizers they need."""
        if active is None or backends.inline is None:
            return
        self.seen.update(active.routes.values())  # served already: their towers are loaded
        names = await backends.matcher.collection_names()
        for name in active.routes:
            fresh = sorted(c for c in names if c.startswith(f"{name}_") and c not in self.seen)
            if not fresh:
                continue
            manifests = {tower.encoder: await backends.manifests(tower.encoder)
                         for _, _, tower in arm_towers(active.experiments, name)}
            for collection in fresh:
                try:
                    record = await backends.matcher.manifest(collection)
                except Exception as exc:  # no record yet (being created): read again next round
                    log.debug("version %s has no record to read yet: %s", collection, exc)
                    continue
                self.seen.add(collection)
                for model in sorted(shadow_tokenizers(active.experiments, name, collection, record, manifests)
                                    - self.prepared):
                    try:
                        await backends.inline.prepare(model)
                    except Exception as exc:
                        log.warning("version %s was built by %s, whose tokenizer serving cannot load (%s): a "
                                    "publish of it will be refused", collection, model, exc)
                        continue
                    self.prepared.add(model)
                    log.info("tokenizer of %s prepared for version %s (built by another model)", model, collection)


async def towers_for(active: Active, backends: Backends, name: str, collection: str,
                     collection_manifest: Mapping[str, Any]) -> tuple[dict, dict]:
    """What serves config collection name ``name`` once it resolves to ``collection``: (configured encoder ->
    the tower serving it, (backend, encoder) -> encoder), every tower another than the arm's loaded and warmed;
    ConsistencyError when one cannot be."""
    towers, encoders = {}, {}
    for spec, kind, tower in arm_towers(active.experiments, name):
        chosen = serving_tower(tower.encoder, await backends.manifests(tower.encoder), kind, collection,
                               collection_manifest)
        key = (spec.encoder_backend, chosen)
        if key not in active.encoders:
            encoders[key] = await load_tower(backends, spec, kind, chosen, collection, collection_manifest,
                                             instead_of=tower.encoder)
            log.info("collection %s is served by tower %s in place of %s (loaded, canary answered)",
                     collection, chosen, tower.encoder)
        towers[tower.encoder] = served(tower, chosen)
    return towers, encoders


def spare_after(spare: frozenset, before: Active, after: Active) -> frozenset:
    """The encoder keys kept loaded, unused, for a rollback once serving goes from ``before`` to ``after``: on a
    route move, those ``before`` used that ``after`` does not (a rollback returns to them), replacing the spare
    kept so far; a change that moves no route (a sync, fresh records) keeps ``spare``. Pure."""
    if dict(after.routes) == dict(before.routes):
        return spare
    return frozenset(before.encoders) - frozenset(after.encoders)


class Releases:
    """Encoders that no current Active uses, closed once every search that may still hold one has ended.

    A round marks each pooled encoder the current Active does not use with the searches started so far and
    the pool's hand-out count; it is closed in a later round once the oldest search in flight started after
    that mark, unless the pool handed it out again (an activation took it) or it is in use again. Rounds skip
    while a config is being activated (it may hold encoders no Active holds yet). The spare (:meth:`moved`,
    :func:`spare_after`) is never marked."""

    def __init__(self) -> None:
        self.marks: dict[tuple[str, str], tuple[int, int]] = {}  # key -> (searches started, pool hand-outs)
        self.released: list[tuple[str, str]] = []
        self.spare: frozenset[tuple[str, str]] = frozenset()

    def moved(self, before: Active, after: Active) -> None:
        """Serving went from ``before`` to ``after`` (the route watcher swapped them in): keep the spare."""
        spare = spare_after(self.spare, before, after)
        if spare != self.spare:
            log.info("encoders %s kept loaded for a rollback (released: the spare %s, once unused)",
                     sorted(spare) or "none", sorted(self.spare - spare) or "none")
        self.spare = spare

    async def round(self, active: Active | None, backends: Backends, activating: bool = False) -> None:
        pool = backends.encoders
        if active is None or activating or not hasattr(pool, "release"):
            return
        unused = set(pool.keys()) - set(active.encoders) - self.spare
        self.marks = {key: mark for key, mark in self.marks.items() if key in unused}
        for key in unused:
            started, handed = self.marks.setdefault(key, (backends.load.started, pool.handed))
            if pool.handed_at(key) > handed:
                del self.marks[key]  # handed out since the mark: marked afresh next round
            elif backends.load.oldest() > started:
                del self.marks[key]
                await pool.release(key)
                self.released.append(key)
                log.info("encoder %s (%s) released: no Active uses it any more", key[1], key[0])
