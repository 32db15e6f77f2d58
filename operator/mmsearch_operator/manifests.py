"""Build one stage's ``batch/v1`` Job from an IndexJob (a pure function).

The container runs ``mmsearch job <stage> <flags>`` exactly as the job CLI
documents it (docs/configuration.md: every flag is also an ``MMSEARCH_<FLAG>``
variable). Decisions:
- Plain settings are flags, so ``kubectl describe job`` shows what runs;
  secrets are environment variables from ``secretKeyRef`` (the MongoDB URI,
  the Milvus token, AWS credentials), never copied into the Job.
- The collection's layout is typed spec, not ``spec.env``: ``spec.milvus.fields``
  becomes push-milvus's ``--fields`` (its JSON form, so a corpus key may hold
  ``,`` or ``:``) and ``spec.milvus.bm25`` its ``--bm25-fields`` and
  ``--bm25-analyzer``; sync reads the layout from the collection record.
- A sharded encode (``spec.encode.shards`` N > 1) is an Indexed Job with N
  completions; each pod passes ``--shard auto/N`` (encode reads the
  ``JOB_COMPLETION_INDEX`` variable the Job controller sets in every pod of an
  Indexed Job) and retries are per index (``backoffLimitPerIndex``).
- Pods run as a non-root user with a read-only root filesystem and no
  capabilities; ``/tmp`` is an emptyDir and HOME, the artifact cache and the
  Hugging Face cache live there.
- Jobs are owned by the IndexJob (controller owner reference), so deleting the
  IndexJob deletes its Jobs; finished Jobs are removed after
  ``spec.ttlSecondsAfterFinished`` (their outcome stays in the IndexJob's status).
- ``evaluate`` writes its summary (the figures) to the pod's termination message
  (``--summary-file /dev/termination-log``, at most 4 KiB, kept in the pod's status),
  which is where the operator reads it; ``publish`` then gets the report it
  wrote (``<workdir>/evaluation/<collection>.json``), the thresholds and ``--force``
  from ``spec.evaluation``, so the job applies the same gate and records the figures.
- ``publish`` writes its outcome (the alias's new and previous collection, the
  version's documents and recall@k) to its termination message too; the
  ``rollback`` action is ``mmsearch job publish --rollback`` with the same
  summary file, in a Job labelled stage ``rollback``; the ``snapshot`` action
  runs ``mmsearch job snapshot --to <spec.snapshots.location>/<namespace>/<name>/<time>
  --keep N`` (its outcome in the termination message too), and mode
  ``restore`` runs ``mmsearch job restore --from <spec.restore.from>`` into
  the run's version, then publish.
- ``spec.mongo.collection`` may say ``{collection}``: push-mongo writes the
  summaries of ``<scene>_<version>`` into that collection name, sync passes the
  template on (it resolves the live version itself).
- Live writes: ``publish``, ``rollback`` and ``sync`` replay the writer's log
  (``mmsearch.jobs.replay``), so they get the MongoDB URI too, the summaries'
  database and collection template, the log's database
  (``spec.mongo.writeLogDatabase``, the writer's ``MMSEARCH_WRITER_LOG_DATABASE``)
  and the model repository that re-encodes an entry written for another model.
"""
from __future__ import annotations

import json
from typing import Any

from mmsearch.core.milvus.names import documents_collection
from mmsearch.operator.plan import run_workdir
from mmsearch.operator.spec import API_VERSION, KIND, document_model, mongo_collection

MANAGED_BY = "mmsearch-operator"
LABEL_INDEXJOB = "mmsearch.io/indexjob"
LABEL_STAGE = "mmsearch.io/stage"
LABEL_GENERATION = "mmsearch.io/generation"
ANNOTATION_FINGERPRINT = "mmsearch.io/fingerprint"
ANNOTATION_VERSION = "mmsearch.io/version"
RUN_AS = 10001
TMP = "/tmp"
TERMINATION_LOG = "/dev/termination-log"
# The job command of a stage or action whose name is not its command's.
COMMANDS = {"rollback": "publish"}
# Whose pods write a summary to their termination message (the operator reads it).
SUMMARY_STAGES = ("evaluate", "publish", "rollback", "snapshot")
# spec.evaluation's thresholds -> publish's flags
GATE_FLAGS = {"minRecall": "--min-recall", "maxRegression": "--max-regression", "maxP99Ms": "--max-p99-ms"}

# Flags of `prepare` for the optional field mapping of QA corpora (spec.source.fields), and for OCR
# (spec.source.ocr: images and video) and video frames (spec.source.frames): given only when the spec says,
# so prepare's own defaults hold otherwise.
_FIELD_FLAGS = {"question": "--question-field", "answer": "--answer-field",
                "category": "--category-field", "id": "--id-field"}
_MEDIA_FLAGS = {("ocr", "engine"): "--ocr", ("ocr", "timeoutSeconds"): "--ocr-timeout",
                ("frames", "everySeconds"): "--frame-every", ("frames", "sceneThreshold"): "--scene-threshold"}


def labels(meta: dict[str, Any], spec: dict[str, Any], stage: str, generation: int) -> dict[str, str]:
    """Labels of a stage's Job and its pods; ``mmsearch.io/indexjob`` selects an IndexJob's Jobs."""
    return {
        "app.kubernetes.io/name": "mmsearch",
        "app.kubernetes.io/component": "index-job",
        "app.kubernetes.io/part-of": "mmsearch",
        "app.kubernetes.io/managed-by": MANAGED_BY,
        "app.kubernetes.io/instance": meta["name"],
        LABEL_INDEXJOB: meta["name"],
        LABEL_STAGE: stage,
        LABEL_GENERATION: str(generation),
        "mmsearch.io/scene": spec["scene"],
    }


def owner_reference(meta: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": API_VERSION, "kind": KIND, "name": meta["name"], "uid": meta.get("uid", ""),
            "controller": True, "blockOwnerDeletion": True}


def stage_args(stage: str, spec: dict[str, Any], workdir: str, version: str | None,
               target: str | None = None) -> list[str]:
    """The flags after ``mmsearch job <stage>`` (``target``: where a snapshot goes)."""
    model, milvus = spec.get("model") or {}, spec["milvus"]
    if stage == "prepare":
        source = spec["source"]
        args = ["--workdir", workdir, "--source-kind", source["kind"]]
        if source.get("uri"):
            args += ["--source", source["uri"]]
        if source.get("baseUrl"):
            args += ["--base-url", source["baseUrl"]]
        for field, flag in _FIELD_FLAGS.items():
            if (source.get("fields") or {}).get(field):
                args += [flag, source["fields"][field]]
        for (group, key), flag in _MEDIA_FLAGS.items():
            value = (source.get(group) or {}).get(key)
            if value is not None:
                args += [flag, str(value)]
        return args
    if stage == "export":
        return ["--source-model", model["source"], "--name", model["name"], "--model-repository", model["repository"],
                "--model-version", str(model["version"]), "--family", model["family"],
                "--triton-max-batch-size", str(model["maxBatchSize"])]
    if stage == "encode":
        enc = spec["encode"]
        args = ["--workdir", workdir, "--model-repository", model["repository"], "--model", document_model(spec),
                "--batch-size", str(enc["batchSize"])]
        if spec["modality"] == "text":  # textTemplate, when set, instead of textField (which has a default)
            args += ["--text-template", enc["textTemplate"]] if enc.get("textTemplate") else [
                "--text-field", enc["textField"]]
        if enc["shards"] > 1:
            args += ["--shard", f"auto/{enc['shards']}"]
        return args
    if stage == "push-milvus":
        args = ["--workdir", workdir, "--milvus-uri", milvus["uri"], "--scene", spec["scene"],
                "--version", _need(version, stage), "--model-repository", model["repository"],
                "--model", document_model(spec), "--index-type", milvus["indexType"],
                "--metric", milvus["metric"], "--batch-size", str(milvus["batchSize"])]
        if milvus.get("indexParams"):
            args += ["--index-params", json.dumps(milvus["indexParams"], sort_keys=True)]
        if milvus.get("fields"):  # the JSON form: a corpus key may hold ',' or ':'
            args += ["--fields", json.dumps(milvus["fields"], sort_keys=True)]
        if milvus.get("bm25"):
            args += ["--bm25-fields", ",".join(milvus["bm25"]["fields"]),
                     "--bm25-analyzer", milvus["bm25"].get("analyzer") or "english"]
        return args
    if stage == "push-mongo":
        mongo = spec["mongo"]
        collection = mongo_collection(spec)
        if "{collection}" in collection:
            collection = documents_collection(collection, f"{spec['scene']}_{_need(version, stage)}")
        return ["--workdir", workdir, "--database", mongo["database"], "--collection", collection,
                "--batch-size", str(mongo["batchSize"])]
    if stage == "evaluate":
        evaluation = spec["evaluation"]
        return ["--milvus-uri", milvus["uri"], "--collection", f"{spec['scene']}_{_need(version, stage)}",
                "--compare", spec["scene"], "--queries", evaluation["queries"], "--model-repository", model["repository"],
                "--workdir", workdir, "--k", str(evaluation["k"]), "--summary-file", TERMINATION_LOG]
    if stage == "publish":
        args = ["--milvus-uri", milvus["uri"], "--scene", spec["scene"], "--version", _need(version, stage),
                "--keep", str(spec["publish"]["keep"]), "--summary-file", TERMINATION_LOG] + write_log_args(spec)
        evaluation = spec.get("evaluation")
        if evaluation:
            args += ["--report", report_uri(workdir, f"{spec['scene']}_{version}")]
            args += [x for field, flag in GATE_FLAGS.items() if evaluation.get(field) is not None
                     for x in (flag, f"{evaluation[field]:g}")]
            args += ["--force"] if evaluation.get("force") else []
        return args
    if stage in ("snapshot", "restore"):
        mongo = spec["mongo"]
        args = ["--milvus-uri", milvus["uri"], "--scene", spec["scene"], "--database", mongo["database"],
                "--collection", mongo_collection(spec)]
        if stage == "restore":
            return args + ["--from", spec["restore"]["from"], "--version", _need(version, stage)]
        return args + ["--to", _need(target, stage), "--keep", str(spec["snapshots"]["keep"]),
                       "--summary-file", TERMINATION_LOG]
    if stage == "rollback":
        return ["--milvus-uri", milvus["uri"], "--scene", spec["scene"], "--rollback", "--summary-file",
                TERMINATION_LOG] + write_log_args(spec)
    if stage == "sync":
        return ["--workdir", workdir, "--milvus-uri", milvus["uri"], "--scene", spec["scene"],
                "--model-repository", model["repository"], "--model", document_model(spec),
                "--collection", mongo_collection(spec), "--database", spec["mongo"]["database"],
                "--batch-size", str(spec["encode"]["batchSize"]),
                "--writes-database", spec["mongo"]["writeLogDatabase"]]
    raise ValueError(f"unknown stage {stage!r}")


def write_log_args(spec: dict[str, Any]) -> list[str]:
    """What publish and rollback replay the live writes with (``mmsearch.jobs.replay.LogAccess``): the
    write log's and the summaries' MongoDB names, and the model repository that re-encodes an entry
    written for another model; the URI itself is ``MMSEARCH_MONGO_URI`` (:func:`stage_env`). None
    without ``spec.mongo`` (no summaries, no live writes to replay)."""
    mongo = spec.get("mongo") or {}
    if not (mongo.get("uri") or mongo.get("uriSecret")):
        return []
    repository = (spec.get("model") or {}).get("repository")
    return (["--database", mongo["database"], "--collection", mongo_collection(spec),
             "--writes-database", mongo["writeLogDatabase"]]
            + (["--model-repository", repository] if repository else []))


def report_uri(workdir: str, collection: str) -> str:
    """Where ``mmsearch job evaluate`` writes its report for ``collection`` (``mmsearch.jobs.evaluate.report_uri``)."""
    return f"{workdir.rstrip('/')}/evaluation/{collection}.json"


def _need(version: str | None, stage: str) -> str:
    if not version:
        raise ValueError(f"stage {stage!r} needs the collection version")
    return version


def _secret_env(name: str, secret: str, key: str) -> dict[str, Any]:
    return {"name": name, "valueFrom": {"secretKeyRef": {"name": secret, "key": key}}}


def stage_env(stage: str, spec: dict[str, Any]) -> list[dict[str, Any]]:
    """Environment of a stage's container: caches under /tmp, S3 and MongoDB settings, then spec.env."""
    env: list[dict[str, Any]] = [
        {"name": "HOME", "value": TMP},
        {"name": "MMSEARCH_CACHE_DIR", "value": f"{TMP}/mmsearch-cache"},
        {"name": "HF_HOME", "value": f"{TMP}/huggingface"},
        {"name": "PYTHONUNBUFFERED", "value": "1"},
    ]
    s3 = spec.get("s3") or {}
    if s3.get("endpointUrl"):
        env.append({"name": "MMSEARCH_S3_ENDPOINT_URL", "value": s3["endpointUrl"]})
    if s3.get("region"):
        env.append({"name": "AWS_DEFAULT_REGION", "value": s3["region"]})
    if s3.get("credentialsSecret"):
        env.append(_secret_env("AWS_ACCESS_KEY_ID", s3["credentialsSecret"], "AWS_ACCESS_KEY_ID"))
        env.append(_secret_env("AWS_SECRET_ACCESS_KEY", s3["credentialsSecret"], "AWS_SECRET_ACCESS_KEY"))
    token = spec["milvus"].get("tokenSecret")
    if token and stage in ("push-milvus", "evaluate", "publish", "rollback", "sync", "snapshot", "restore"):
        env.append(_secret_env("MMSEARCH_MILVUS_TOKEN", token["name"], token.get("key") or "token"))
    mongo = spec.get("mongo") or {}
    if stage in ("push-mongo", "sync", "snapshot", "restore") or (
            stage in ("publish", "rollback") and (mongo.get("uri") or mongo.get("uriSecret"))):  # the write log
        if mongo.get("uriSecret"):
            ref = mongo["uriSecret"]
            env.append(_secret_env("MMSEARCH_MONGO_URI", ref["name"], ref.get("key") or "uri"))
        else:
            env.append({"name": "MMSEARCH_MONGO_URI", "value": mongo["uri"]})
    env += list(spec.get("env") or [])
    return env


def build_job(obj: dict[str, Any], spec: dict[str, Any], stage: str, *, name: str, generation: int,
              fingerprint: str, version: str | None, target: str | None = None) -> dict[str, Any]:
    """The ``batch/v1`` Job that runs ``stage`` of the IndexJob ``obj`` (``spec`` already defaulted;
    ``target``: a snapshot's location)."""
    meta = obj["metadata"]
    workdir = run_workdir(spec, meta.get("namespace", ""), meta["name"])
    job_labels = labels(meta, spec, stage, generation)
    volumes: list[dict[str, Any]] = [{"name": "tmp", "emptyDir": {}}]
    mounts: list[dict[str, Any]] = [{"name": "tmp", "mountPath": TMP}]
    if (spec.get("volume") or {}).get("claimName"):
        volumes.append({"name": "data", "persistentVolumeClaim": {"claimName": spec["volume"]["claimName"]}})
        mounts.append({"name": "data", "mountPath": spec["volume"]["mountPath"]})

    container: dict[str, Any] = {
        "name": stage,
        "image": spec["image"],
        "imagePullPolicy": spec["imagePullPolicy"],
        "command": ["mmsearch", "job", COMMANDS.get(stage, stage)],
        "args": stage_args(stage, spec, workdir, version, target),
        "env": stage_env(stage, spec),
        "volumeMounts": mounts,
        "securityContext": {
            "allowPrivilegeEscalation": False,
            "readOnlyRootFilesystem": True,
            "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]},
        },
    }
    if stage in SUMMARY_STAGES:
        container["terminationMessagePath"] = TERMINATION_LOG  # the summary the operator reads
    resources = spec["encode"].get("resources") if stage == "encode" else spec.get("resources")
    if resources:
        container["resources"] = resources

    pod: dict[str, Any] = {
        "restartPolicy": "Never",
        "containers": [container],
        "volumes": volumes,
        "securityContext": {
            "runAsNonRoot": True, "runAsUser": RUN_AS, "runAsGroup": RUN_AS, "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
    }
    if spec.get("serviceAccountName"):
        pod["serviceAccountName"] = spec["serviceAccountName"]
    if spec.get("imagePullSecrets"):
        pod["imagePullSecrets"] = [{"name": s} for s in spec["imagePullSecrets"]]
    if stage == "encode":
        if spec["encode"].get("nodeSelector"):
            pod["nodeSelector"] = dict(spec["encode"]["nodeSelector"])
        if spec["encode"].get("tolerations"):
            pod["tolerations"] = list(spec["encode"]["tolerations"])

    job_spec: dict[str, Any] = {
        "ttlSecondsAfterFinished": spec["ttlSecondsAfterFinished"],
        "template": {"metadata": {"labels": job_labels}, "spec": pod},
    }
    shards = spec["encode"]["shards"] if stage == "encode" else 1
    if shards > 1:
        job_spec |= {"completionMode": "Indexed", "completions": shards,
                     "parallelism": min(shards, spec["encode"].get("parallelism") or shards),
                     "backoffLimitPerIndex": spec["backoffLimit"]}
    else:
        job_spec |= {"completions": 1, "parallelism": 1, "backoffLimit": spec["backoffLimit"]}
    if spec.get("activeDeadlineSeconds"):
        job_spec["activeDeadlineSeconds"] = spec["activeDeadlineSeconds"]

    annotations = {ANNOTATION_FINGERPRINT: fingerprint}
    if version:
        annotations[ANNOTATION_VERSION] = version
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {
            "name": name,
            "namespace": meta.get("namespace"),
            "labels": job_labels,
            "annotations": annotations,
            "ownerReferences": [owner_reference(meta)],
        },
        "spec": job_spec,
    }
