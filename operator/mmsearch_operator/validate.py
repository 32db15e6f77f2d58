"""Checks on an IndexJob that its CRD schema cannot express.

The schema refuses missing fields, wrong types, unknown enum values, bad
patterns and bounds at ``kubectl apply`` time, and its CEL rules
(``x-kubernetes-validations``) relations within one object (encode.parallelism
at most encode.shards, no password in mongo.uri, not every stage skipped).
What it cannot say is checked here; a failure marks the IndexJob Failed with
these messages, each naming the field's path and what to do:
- unknown fields (the API server prunes them unless the client asks for
  strict field validation, so a typo such as ``encode.shard: 4`` would
  silently mean 1 shard; kubectl's default ``--validate=strict`` refuses
  them at apply time, other clients may not): see :data:`spec.FIELDS`;
- relations across objects (``publish.enabled: false`` with the other five
  stages in skipStages: nothing would run), the object's name length;
- ``spec.evaluation`` (full mode only; its query set an s3:// URI or a path
  on spec.volume, its thresholds finite and in range) and skips of stages the
  mode never runs (also CEL rules of the CRD, checked again here);
- ``spec.source``: its kind against the modality, and ``baseUrl``, ``ocr``
  and ``frames`` (prepare's ``--ocr``, ``--ocr-timeout``, ``--frame-every``,
  ``--scene-threshold``) only for the kinds prepare takes them for;
- ``spec.encode.textTemplate`` (and ``textField``) as encode will read them
  (:mod:`mmsearch.core.text_template`): plain ``{field}`` names only, at least
  one, for modality text only;
- ``spec.milvus.fields`` and ``spec.milvus.bm25`` as push-milvus will read
  them (:mod:`mmsearch.core.fields`): a name declared twice, a reserved name,
  a key in an item that is not one of name, type, source.
- ``spec.schedule`` (mode incremental only, also a CEL rule): its cron as
  :mod:`mmsearch.operator.cron` reads it (the CRD's pattern checks each
  field's shape and range; a backwards range such as ``5-1`` and a date that
  never comes, such as ``0 0 30 2 *``, are refused here), its policy and
  bounds as the schema has them.
- ``spec.restore`` (mode restore only; then source, model and modality are
  not needed: the snapshot records them) and ``spec.snapshots`` (a location
  every pod reaches, a cron as above, the retention).
The required fields and the CEL rules are checked again too, so that an
object the API server did not validate (an older CRD, an emulator) fails with
a message instead of running wrong or crashing the operator.
"""
from __future__ import annotations

import math
import re
from datetime import datetime, timezone
from typing import Any

from pydantic import ValidationError

from mmsearch.core.fields import ANALYZERS, FieldSpec
from mmsearch.core.quality import Thresholds
from mmsearch.core.text_template import TemplateError, field_template, template_fields
from mmsearch.operator.cron import CronError, next_after, parse
from mmsearch.operator.plan import MAX_NAME
from mmsearch.operator.spec import FIELDS, GATE_NAMES, mode_stages, skipped_stages

_REQUIRED = (("scene",), ("image",), ("workdir",), ("milvus", "uri"))
# what a build or a sync needs besides (a restore reads them from its snapshot)
_BUILD_REQUIRED = (("modality",), ("source", "kind"), ("model", "source"), ("model", "name"), ("model", "repository"))
_SOURCE_MODALITY = {"images": "image", "video": "image", "qa": "text", "stdlib": "text"}
OCR_ENGINES = ("none", "rapidocr", "tesseract")  # prepare --ocr (mmsearch.jobs.sources.image_text.OCR_ENGINES)
_S3 = re.compile(r"^s3://([^/]+)(/.*)?$")
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_PASSWORD_IN_URI = re.compile(r"^[^:/]+://[^/@]*:[^/@]*@")
# The CRD's spec.image pattern and maxLength, spec.evaluation.queries' maxLength.
_IMAGE = re.compile(r"^([A-Za-z0-9][A-Za-z0-9.-]*(:[0-9]+)?/)?[a-z0-9][a-z0-9._/-]*"
                    r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?(@sha256:[a-f0-9]{64})?$")
MAX_IMAGE = 512
MAX_QUERIES_URI = 1024


def unknown_fields(value: Any, fields: dict[str, Any] = FIELDS, path: str = "spec") -> list[str]:
    """The paths of fields ``value`` has that the CRD does not declare (see :data:`spec.FIELDS`). Pure."""
    if not isinstance(value, dict):
        return []
    out = []
    for key, item in value.items():
        if key not in fields:
            out.append(f"{path}.{key}")
        elif isinstance(fields[key], dict):
            out += unknown_fields(item, fields[key], f"{path}.{key}")
    return out


def _get(spec: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = spec
    for key in path:
        if not isinstance(node, dict):
            return None
        node = node.get(key)
    return node


def _check_location(field: str, value: str, spec: dict[str, Any]) -> list[str]:
    """An artifact location every stage's pod can reach: s3://bucket/prefix, or a path on spec.volume."""
    if value.startswith("s3://"):
        m = _S3.match(value)
        if not m or not _BUCKET.match(m.group(1)):
            return [f"spec.{field}: {value!r} is not a valid S3 URI (expected s3://bucket/prefix, "
                    "bucket 3-63 lowercase letters, digits, dots or hyphens)"]
        return []
    if "://" in value or not value.startswith("/"):
        return [f"spec.{field}: {value!r} must be an s3:// URI or an absolute path on spec.volume"]
    volume = spec.get("volume") or {}
    mount = (volume.get("mountPath") or "").rstrip("/")
    if not volume.get("claimName"):
        return [f"spec.{field}: {value!r} is a local path, so every stage's pod needs the same volume: "
                "set spec.volume.claimName (a ReadWriteMany PersistentVolumeClaim) or use an s3:// URI"]
    if not mount or not (value == mount or value.startswith(mount + "/")):
        return [f"spec.{field}: {value!r} is not under spec.volume.mountPath {mount or '(unset)'!r}"]
    return []


def _check_layout(milvus: dict[str, Any]) -> list[str]:
    """spec.milvus.fields and spec.milvus.bm25 as push-milvus's --fields and --bm25-fields will read them."""
    problems, names = [], []
    fields = milvus.get("fields") or []
    for i, item in enumerate(fields if isinstance(fields, list) else [fields]):
        try:
            names.append(FieldSpec.model_validate(item).name)
        except ValidationError as exc:
            err = exc.errors()[0]
            where = "".join(f".{p}" for p in err["loc"])
            problems.append(f"spec.milvus.fields[{i}]{where}: {err['msg'].removeprefix('Value error, ')}")
    problems += [f"spec.milvus.fields: {n!r} is declared twice: each field once" for n in sorted(set(names))
                 if names.count(n) > 1]
    bm25 = milvus.get("bm25")
    if bm25 is None:
        return problems
    keys = bm25.get("fields") if isinstance(bm25, dict) else None
    if not isinstance(keys, list) or not keys:
        problems.append("spec.milvus.bm25.fields: list the corpus keys whose text is indexed for BM25, "
                        "e.g. [question, answer] (or leave spec.milvus.bm25 out)")
    else:
        problems += [f"spec.milvus.bm25.fields[{i}]: {key!r} is not a corpus key (a non-empty name without "
                     "commas or surrounding spaces)" for i, key in enumerate(keys)
                     if not isinstance(key, str) or not key.strip() or "," in key or key != key.strip()]
    if isinstance(bm25, dict) and bm25.get("analyzer", "english") not in ANALYZERS:
        problems.append(f"spec.milvus.bm25.analyzer: {bm25['analyzer']!r} is not one of {', '.join(ANALYZERS)}")
    return problems


def validate(spec: dict[str, Any], meta: dict[str, Any]) -> list[str]:
    """Problems with a (defaulted) spec, one message per problem; empty when it is runnable."""
    problems: list[str] = [
        f"{p}: unknown field (a typo? the API server would drop it silently); the fields are those of the "
        "IndexJob CRD (kubectl explain indexjob.spec)" for p in unknown_fields(spec)]
    name = str(meta.get("name") or "")
    if len(name) > MAX_NAME or not _NAME.match(name):
        problems.append(f"metadata.name: {name!r} must be a DNS label of at most {MAX_NAME} characters "
                        "(the stage Jobs are named <name>-<stage>-<hash>, at most 63)")
    restoring = spec.get("mode") == "restore"
    missing = [".".join(p) for p in _REQUIRED + (() if restoring else _BUILD_REQUIRED) if _get(spec, p) in (None, "")]
    if missing:
        return problems + [f"spec.{m} is required" + (" (except in mode restore)" if _build_only(m) else "")
                           for m in missing]
    if restoring:
        problems += ["spec.skipStages: every stage is skipped (with publish.enabled false): nothing would run"
                     if skipped_stages(spec) >= set(mode_stages(spec)) else ""]
        return [p for p in problems if p] + _check_restore(spec) + _check_mongo(spec) + _check_modes(spec) + \
            check_snapshots(spec)
    if spec.get("restore"):
        problems.append("spec.restore applies to mode restore only: set mode restore or remove it")

    problems += _check_source(spec["source"], spec["modality"])
    problems += _check_location("workdir", spec["workdir"], spec)
    problems += _check_location("model.repository", spec["model"]["repository"], spec)

    problems += _check_mongo(spec)
    problems += _check_layout(spec["milvus"])
    encode = spec.get("encode") or {}
    if isinstance(encode.get("parallelism"), int) and encode["parallelism"] > int(encode.get("shards") or 1):
        problems.append(f"spec.encode.parallelism: {encode['parallelism']} is more than encode.shards "
                        f"({encode.get('shards') or 1}): at most every shard runs at once")
    problems += _check_text(spec)
    if skipped_stages(spec) >= set(mode_stages(spec)):
        problems.append("spec.skipStages: every stage is skipped (with publish.enabled false): nothing would run")
    return problems + _check_modes(spec) + _check_evaluation(spec) + check_schedule(spec) + check_snapshots(spec)


def _check_source(source: dict[str, Any], modality: str) -> list[str]:
    """spec.source: its kind against the modality, and the options each kind takes (prepare's flags)."""
    kind, problems = source["kind"], []
    want = _SOURCE_MODALITY.get(kind)
    if want is None:
        problems.append(f"spec.source.kind: {kind!r} is not one of {', '.join(_SOURCE_MODALITY)}")
    elif want != modality:
        problems.append(f"spec.source.kind: {kind!r} corpora need spec.modality {want!r}, not {modality!r}")
    if kind in ("images", "video", "qa") and not source.get("uri"):
        problems.append(f"spec.source.uri is required for source.kind {kind!r} (the folder or corpus file to index)")
    if source.get("fields") and kind != "qa":
        problems.append("spec.source.fields applies to source.kind 'qa' only")
    for key, kinds in (("baseUrl", ("images", "video")), ("ocr", ("images", "video")), ("frames", ("video",))):
        if source.get(key) and kind not in kinds:
            problems.append(f"spec.source.{key} applies to source.kind {' and '.join(map(repr, kinds))} only: "
                            "remove it")
    ocr, frames = source.get("ocr") or {}, source.get("frames") or {}
    if ocr and ocr.get("engine") not in OCR_ENGINES:
        problems.append(f"spec.source.ocr.engine: {ocr.get('engine')!r} is not one of {', '.join(OCR_ENGINES)}")
    for path, value, low, high in (("ocr.timeoutSeconds", ocr.get("timeoutSeconds"), 0.001, None),
                                   ("frames.everySeconds", frames.get("everySeconds"), 0.001, None),
                                   ("frames.sceneThreshold", frames.get("sceneThreshold"), 0.0, 1.0)):
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if value is not None and (not number or value < low or (high is not None and value > high)):
            bounds = f"between {low} and {high}" if high is not None else f"at least {low} (seconds)"
            problems.append(f"spec.source.{path}: {value!r} must be a number {bounds}")
    return problems


def _check_text(spec: dict[str, Any]) -> list[str]:
    """spec.encode.textTemplate / textField: what encode embeds of a text corpus's records."""
    encode = spec.get("encode") or {}
    template, field = encode.get("textTemplate"), encode.get("textField")
    if template and spec.get("modality") != "text":
        return ["spec.encode.textTemplate applies to modality text only (an image tower embeds the image): "
                "remove it"]
    try:
        if template:
            template_fields(template)
        elif field and spec.get("modality") == "text":
            field_template(field)
    except TemplateError as exc:
        return [f"spec.encode.{'textTemplate' if template else 'textField'}: {exc}"]
    return []


def _check_modes(spec: dict[str, Any]) -> list[str]:
    """Skips of stages the mode never runs, and the image reference (the CRD's CEL rule and pattern)."""
    problems = []
    mode, stages = spec.get("mode") or "full", mode_stages(spec)
    problems += [f"spec.skipStages: {stage!r} is not a stage of mode {mode} (it runs {', '.join(stages)}): "
                 "remove it" for stage in spec.get("skipStages") or [] if stage not in stages]
    rollback = spec.get("rollback", 0)
    if isinstance(rollback, bool) or not isinstance(rollback, int) or rollback < 0:
        problems.append(f"spec.rollback: {rollback!r} must be a whole number, 0 or more (bump it to roll back)")
    image = spec.get("image")
    if isinstance(image, str) and (len(image) > MAX_IMAGE or not _IMAGE.match(image)):
        problems.append(f"spec.image: {image[:80]!r} is not a container image reference "
                        "(e.g. ghcr.io/org/mmsearch:0.1.0)")
    return problems


def _check_evaluation(spec: dict[str, Any]) -> list[str]:
    """spec.evaluation: for mode full only, a query set every pod can read, thresholds that are a bar."""
    evaluation = spec.get("evaluation")
    if not evaluation:
        return []
    if (spec.get("mode") or "full") != "full":
        return ["spec.evaluation applies to mode full only (an incremental sync changes the live version in "
                "place, nothing is measured before it): remove it or use mode full"]
    queries = evaluation.get("queries")
    if not isinstance(queries, str) or not queries:
        return ["spec.evaluation.queries is required (the labelled query set, s3:// or a path on spec.volume)"]
    if len(queries) > MAX_QUERIES_URI or re.search(r"\s", queries):
        return [f"spec.evaluation.queries: {queries[:80]!r} must be one s3:// URI or absolute path of at most "
                f"{MAX_QUERIES_URI} characters, without spaces or line breaks"]
    problems = _check_location("evaluation.queries", queries, spec)
    thresholds = Thresholds(evaluation.get("minRecall"), evaluation.get("maxRegression"), evaluation.get("maxP99Ms"))
    return problems + thresholds.invalid(GATE_NAMES)


_POLICIES = ("Allow", "Forbid", "Replace")
# spec.schedule's integer fields: (lowest, highest), as the CRD bounds them
_SCHEDULE_BOUNDS = {"startingDeadlineSeconds": (10, 2**31 - 1), "successfulRunsHistoryLimit": (0, 100),
                    "failedRunsHistoryLimit": (0, 100)}


def check_schedule(spec: dict[str, Any]) -> list[str]:
    """spec.schedule: an incremental IndexJob's cron, policy and bounds (see :mod:`mmsearch.operator.schedule`)."""
    schedule = spec.get("schedule")
    if schedule is None:
        return []
    if not isinstance(schedule, dict):
        return ["spec.schedule: an object with a cron field, e.g. {cron: '0 3 * * *'}"]
    problems = []
    if (spec.get("mode") or "full") != "incremental":
        problems.append("spec.schedule applies to mode incremental only (a full build names its version by "
                        "generation: a periodic rebuild of a scene is a sync): set mode incremental or remove it")
    problems += _check_cron(schedule.get("cron"))
    policy = schedule.get("concurrencyPolicy", "Allow")
    if policy not in _POLICIES:
        problems.append(f"spec.schedule.concurrencyPolicy: {policy!r} is not one of {', '.join(_POLICIES)}")
    if not isinstance(schedule.get("suspend", False), bool):
        problems.append("spec.schedule.suspend: true or false")
    for field, (lo, hi) in _SCHEDULE_BOUNDS.items():
        value = schedule.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            problems.append(f"spec.schedule.{field}: {value!r} must be a whole number from {lo} to {hi}")
    return problems


def _build_only(path: str) -> bool:
    return tuple(path.split(".")) in _BUILD_REQUIRED


def _check_restore(spec: dict[str, Any]) -> list[str]:
    """Mode restore: a snapshot to read, and none of what only builds and syncs use."""
    problems = []
    source = (spec.get("restore") or {}).get("from")
    if not isinstance(source, str) or not source:
        problems.append("spec.restore.from is required in mode restore (the snapshot `mmsearch job snapshot` wrote: "
                        "s3://bucket/prefix or a path on spec.volume)")
    else:
        problems += _check_location("restore.from", source, spec)
    problems += [f"spec.{field} applies to modes full and incremental, not restore: remove it"
                 for field in ("evaluation", "schedule") if spec.get(field)]
    return problems


def check_snapshots(spec: dict[str, Any]) -> list[str]:
    """spec.snapshots: where they go (s3:// or a path on spec.volume), an optional cron, the retention."""
    snapshots = spec.get("snapshots")
    if snapshots is None:
        return []
    if not isinstance(snapshots, dict) or not isinstance(snapshots.get("location"), str) or not snapshots["location"]:
        return ["spec.snapshots.location is required (s3://bucket/prefix or a path on spec.volume)"]
    problems = _check_location("snapshots.location", snapshots["location"], spec)
    cron = snapshots.get("cron")
    if cron is not None:
        problems += [p.replace("spec.schedule.cron", "spec.snapshots.cron") for p in _check_cron(cron)]
    for field, lo, hi in (("keep", 1, 1000), ("request", 0, 2**31 - 1)):
        value = snapshots.get(field)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi):
            problems.append(f"spec.snapshots.{field}: {value!r} must be a whole number from {lo} to {hi}")
    return problems


def _check_cron(cron: Any) -> list[str]:
    if not isinstance(cron, str) or not cron or cron != cron.strip() or len(cron) > 256 or "\n" in cron:
        return [f"spec.schedule.cron: {str(cron)[:80]!r} must be a cron expression such as '0 3 * * *' "
                "(five fields, UTC) or @daily"]
    try:
        if next_after(parse(cron), datetime(2000, 1, 1, tzinfo=timezone.utc)) is None:
            return [f"spec.schedule.cron: {cron!r} never fires (a day that never comes): fix the date"]
    except CronError as exc:
        return [f"spec.schedule.cron: {exc}"]
    return []


def _check_mongo(spec: dict[str, Any]) -> list[str]:
    problems = []
    mongo = spec.get("mongo") or {}
    if "push-mongo" not in (spec.get("skipStages") or []) and bool(mongo.get("uri")) == bool(mongo.get("uriSecret")):
        problems.append("spec.mongo: set exactly one of mongo.uri and mongo.uriSecret "
                        "(a Secret holding the URI with its credentials)")
    if isinstance(mongo.get("uri"), str) and _PASSWORD_IN_URI.match(mongo["uri"]):
        problems.append("spec.mongo.uri: holds a password: put the whole URI in a Secret and name it in "
                        "mongo.uriSecret (an IndexJob is readable by anyone who can list them)")
    return problems
