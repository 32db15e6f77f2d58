"""Shared helpers of the operator tests: the CRD and its schema, sample IndexJobs, and the
Job controller's part (the tests play the cluster's Job controller: no kube-apiserver installs)."""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_PATH = ROOT / "charts" / "mmsearch" / "crds" / "indexjob.yaml"
EXAMPLES = ROOT / "operator" / "examples"
K8S_VERSION = "1.31.0"


def load_crd() -> dict[str, Any]:
    return yaml.safe_load(CRD_PATH.read_text())


def crd_schema() -> dict[str, Any]:
    (version,) = load_crd()["spec"]["versions"]
    return version["schema"]["openAPIV3Schema"]


def apply_defaults(schema: dict[str, Any], value: Any) -> Any:
    """Structural defaulting as the API server does it: a missing property with a default gets it,
    then defaulting recurses into present objects and array items."""
    if isinstance(value, dict) and schema.get("type") == "object":
        for key, sub in (schema.get("properties") or {}).items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                apply_defaults(sub, value[key])
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for item in value:
            apply_defaults(schema["items"], item)
    return value


def cel_errors(schema: dict[str, Any], value: Any, path: str = "") -> list[str]:
    """The messages of the schema's CEL rules (``x-kubernetes-validations``) that ``value`` breaks,
    evaluated with cel-python as the API server evaluates them (``self`` is the value at the rule)."""
    import celpy

    out = []
    for rule in schema.get("x-kubernetes-validations", []):
        env = celpy.Environment()
        program = env.program(env.compile(rule["rule"]))
        if not bool(program.evaluate({"self": celpy.json_to_cel(value)})):
            out.append(f"{path}: {rule.get('message', rule['rule'])}")
    if isinstance(value, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key in value:
                out += cel_errors(sub, value[key], f"{path}.{key}".lstrip("."))
    elif isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            out += cel_errors(schema["items"], item, f"{path}.{i}")
    return out


def schema_errors(obj: dict[str, Any]) -> list[str]:
    """Messages of the CRD's openAPIV3Schema for ``obj`` after defaulting, its CEL rules included
    (empty when valid)."""
    schema = crd_schema()
    doc = apply_defaults(schema, copy.deepcopy(obj))
    validator = jsonschema.Draft7Validator(schema)
    errors = [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(doc)]
    return errors or cel_errors(schema, doc)


def indexjob(name: str = "demo", *, generation: int = 1, uid: str = "0f1e2d3c-aaaa-bbbb-cccc-123456789abc",
             namespace: str = "search", **spec_overrides: Any) -> dict[str, Any]:
    """A valid T2T IndexJob as the API server stores it (uid, generation set)."""
    spec: dict[str, Any] = {
        "scene": "stdlib",
        "modality": "text",
        "image": "ghcr.io/mmsearch/mmsearch:0.1.0",
        "workdir": "s3://mmsearch/work",
        "source": {"kind": "stdlib"},
        "model": {"source": "sentence-transformers/all-MiniLM-L6-v2", "name": "minilm",
                  "repository": "s3://mmsearch/models"},
        "milvus": {"uri": "http://milvus:19530"},
        "mongo": {"uriSecret": {"name": "mongo", "key": "uri"}},
    }
    spec.update(spec_overrides)
    return {"apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob",
            "metadata": {"name": name, "namespace": namespace, "uid": uid, "generation": generation},
            "spec": spec}


# --- the Job controller's part ------------------------------------------------------------

def _with_status(job: dict[str, Any], status: dict[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(job)
    out["status"] = status
    return out


def job_running(job: dict[str, Any], *, failed: int = 0, completed_indexes: str | None = None) -> dict[str, Any]:
    status: dict[str, Any] = {"active": 1, "failed": failed, "startTime": "2026-01-01T00:00:00Z"}
    if completed_indexes is not None:
        status["completedIndexes"] = completed_indexes
        status["succeeded"] = len(completed_indexes.split(",")) if completed_indexes else 0
    return _with_status(job, status)


def job_complete(job: dict[str, Any], *, failed: int = 0) -> dict[str, Any]:
    n = int(job["spec"].get("completions") or 1)
    status = {"succeeded": n, "failed": failed, "completionTime": "2026-01-01T00:05:00Z",
              "conditions": [{"type": "SuccessCriteriaMet", "status": "True"},
                             {"type": "Complete", "status": "True", "lastTransitionTime": "2026-01-01T00:05:00Z"}]}
    if job["spec"].get("completionMode") == "Indexed":
        status["completedIndexes"] = f"0-{n - 1}" if n > 1 else "0"
    return _with_status(job, status)


def job_failed(job: dict[str, Any], *, reason: str = "BackoffLimitExceeded",
               message: str = "Job has reached the specified backoff limit") -> dict[str, Any]:
    failed = int(job["spec"].get("backoffLimit", 0)) + 1
    return _with_status(job, {"failed": failed, "conditions": [
        {"type": "FailureTarget", "status": "True", "reason": reason, "message": message},
        {"type": "Failed", "status": "True", "reason": reason, "message": message,
         "lastTransitionTime": "2026-01-01T00:06:00Z"}]})


def summary(recall: float, *, compared: str | None = "stdlib_v0_old", compared_recall: float = 0.9,
            p99_ms: float = 12.0) -> dict[str, Any]:
    """What ``mmsearch job evaluate`` writes to its summary file (see mmsearch.core.quality)."""
    out: dict[str, Any] = {"collection": "stdlib_v1_0f1e2d3c", "queries": 40, "k": 10, "recall": recall, "mrr": 0.5,
                           "ndcg10": 0.6, "zero_hit": 0.1, "p50_ms": 5.0, "p99_ms": p99_ms}
    if compared:
        out |= {"compare": {"collection": compared, "recall": compared_recall}, "regression": compared_recall - recall,
                "worse": 3}
    return out


def finished_pod(job: dict[str, Any], message: str, *, exit_code: int = 0) -> dict[str, Any]:
    """The pod a Job's controller ran, terminated with ``message`` as its termination message (the kubelet's part)."""
    labels = {**job["spec"]["template"]["metadata"]["labels"], "job-name": job["metadata"]["name"],
              "batch.kubernetes.io/job-name": job["metadata"]["name"]}
    return {"apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": f"{job['metadata']['name']}-abcde", "namespace": job["metadata"]["namespace"],
                         "labels": labels},
            "spec": {"containers": [{"name": job["spec"]["template"]["spec"]["containers"][0]["name"], "image": "x"}]},
            "status": {"phase": "Succeeded" if exit_code == 0 else "Failed", "containerStatuses": [{
                "name": job["spec"]["template"]["spec"]["containers"][0]["name"], "ready": False, "restartCount": 0,
                "image": "x", "imageID": "", "state": {"terminated": {"exitCode": exit_code, "message": message,
                                                                      "reason": "Completed"}}}]}}
