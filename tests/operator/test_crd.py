"""The IndexJob CRD: a valid apiextensions object; its schema accepts the examples and refuses
malformed IndexJobs; its defaults are the operator's defaults."""
from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml

from mmsearch.operator import spec as ij_spec
from mmsearch.operator.reconciler import reconcile
from tests.operator.helpers import EXAMPLES, K8S_VERSION, apply_defaults, crd_schema, indexjob, load_crd, \
    schema_errors


def test_crd_is_a_valid_custom_resource_definition():
    kubernetes_validate.validate(load_crd(), K8S_VERSION, strict=True)


def test_crd_names_and_printer_columns():
    crd = load_crd()
    assert crd["metadata"]["name"] == f"{ij_spec.PLURAL}.{ij_spec.GROUP}"
    assert crd["spec"]["scope"] == "Namespaced"
    assert crd["spec"]["names"]["kind"] == ij_spec.KIND
    (version,) = crd["spec"]["versions"]
    assert version["name"] == ij_spec.VERSION and version["subresources"] == {"status": {}}
    columns = [c["name"] for c in version["additionalPrinterColumns"] if c.get("priority", 0) == 0]
    assert columns == ["Scene", "Phase", "Stage", "Documents", "Recall", "Alias", "Age"]
    paths = {c["name"]: (c["jsonPath"], c["type"]) for c in version["additionalPrinterColumns"]}
    assert paths["Recall"] == (".status.published.recall", "number")  # the published version's, not the candidate's
    assert paths["Documents"] == (".status.published.documents", "integer")
    assert paths["Alias"] == (".status.published.collection", "string")
    status = crd_schema()["properties"]["status"]["properties"]
    for column, (path, _) in paths.items():  # every column reads a field the status schema declares
        if path.startswith(".status."):
            node = status
            *parents, last = path.removeprefix(".status.").split("[")[0].split(".")
            for key in parents:
                node = node[key]["properties"]
            assert last in node, column
    stages_enum = crd_schema()["properties"]["spec"]["properties"]["skipStages"]["items"]["enum"]
    assert tuple(stages_enum) == ij_spec.STAGES


def _schema_defaults(schema: dict[str, Any], path: tuple[str, ...] = ()) -> dict[tuple[str, ...], Any]:
    out = {}
    for key, sub in (schema.get("properties") or {}).items():
        if "default" in sub:
            out[path + (key,)] = sub["default"]
        out.update(_schema_defaults(sub, path + (key,)))
    return out


def test_crd_defaults_are_the_operators_defaults():
    assert _schema_defaults(crd_schema()["properties"]["spec"]) == ij_spec.DEFAULTS


@pytest.mark.parametrize("spec", [
    {"model": {"name": "m", "source": "s", "repository": "/r"}},
    {"model": {"name": "m", "source": "s", "repository": "/r"}, "encode": {"shards": 3},
     "mongo": {"uriSecret": {"name": "x"}}, "volume": {"claimName": "c"}},
    {},
])
def test_schema_defaulting_matches_with_defaults(spec):
    assert apply_defaults(crd_schema()["properties"]["spec"], copy.deepcopy(spec)) == ij_spec.with_defaults(spec)


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_are_valid_and_runnable(path):
    obj = yaml.safe_load(path.read_text())
    assert obj["apiVersion"] == ij_spec.API_VERSION and obj["kind"] == ij_spec.KIND
    assert schema_errors(obj) == []
    stored = copy.deepcopy(obj)
    stored["metadata"] |= {"namespace": "default", "uid": "1234abcd-0000", "generation": 1}
    decision = reconcile(stored, [], now=__import__("datetime").datetime(2026, 1, 1))
    assert decision.status["phase"] == "Running", decision.status
    assert [j["metadata"]["labels"]["mmsearch.io/stage"] for j in decision.create] == ["prepare"]


def test_both_examples_exist():
    assert {p.name for p in EXAMPLES.glob("*.yaml")} >= {"indexjob-t2t.yaml", "indexjob-t2i.yaml"}


def _mutate(obj: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    obj = copy.deepcopy(obj)
    *parents, last = path.split(".")
    node = obj
    for key in parents:
        node = node.setdefault(key, {})
    if value is _DELETE:
        node.pop(last)
    else:
        node[last] = value
    return obj


_DELETE = object()


@pytest.mark.parametrize("path,value,needle", [
    ("spec.scene", _DELETE, "'scene' is a required property"),
    ("spec.scene", "Bad-Scene", "does not match"),
    ("spec.modality", "audio", "is not one of"),
    ("spec.source.kind", "pdf", "is not one of"),
    ("spec.model", {"source": "x", "name": "m"}, "'repository' is a required property"),
    ("spec.milvus.indexType", "ANNOY", "is not one of"),
    ("spec.milvus.metric", "HAMMING", "is not one of"),
    ("spec.encode", {"shards": 0}, "less than the minimum"),
    ("spec.encode", {"batchSize": "big"}, "is not of type 'integer'"),
    ("spec.workdir", "work", "does not match"),
    ("spec.skipStages", ["prepare", "index"], "is not one of"),
    ("spec.mongo", {"uri": "mongodb://m", "uriSecret": {"name": "s"}}, "is valid under each of"),
    ("spec.mongo", {"database": "d"}, "is not valid under any of the given schemas"),
    ("spec.publish", {"keep": 0}, "less than the minimum"),
    ("spec.imagePullPolicy", "Sometimes", "is not one of"),
    ("spec.mode", "partial", "is not one of"),
    ("spec.evaluation", {"minRecall": 0.5}, "'queries' is a required property"),
    ("spec.evaluation", {"queries": "s3://b/q.jsonl", "minRecall": 1.5}, "greater than the maximum"),
    ("spec", _DELETE, "'spec' is a required property"),
    # Each of these once passed the CRD.
    ("spec.encode", {"shards": 2, "parallelism": 4}, "encode.parallelism must not be more than encode.shards"),
    ("spec.mongo", {"uri": "mongodb://root:hunter2@mongo:27017"}, "mongo.uri must not hold a password"),
    ("spec.mongo", {"uri": "http://mongo:27017"}, "does not match"),
    ("spec.resources", {"limits": {"memory": "lots"}}, "'lots' does not match"),
    ("spec.encode", {"resources": {"requests": {"cpu": "1.5 cores"}}}, "'1.5 cores' does not match"),
    ("spec.env", [{"name": "A=B", "value": "x"}], "'A=B' does not match"),
    ("spec.ttlSecondsAfterFinished", 2**31, "is greater than the maximum"),
    ("spec.s3", {"endpointUrl": "minio:9000"}, "'minio:9000' does not match"),
    ("spec.skipStages", ["prepare", "export", "encode", "push-milvus", "push-mongo", "publish"],
     "every stage of spec.mode is skipped"),
    # Each of these once passed the CRD and then ran wrong or not at all.
    ("spec.skipStages", ["encode", "sync"], "skipStages names a stage spec.mode never runs"),
    ("spec", {**indexjob()["spec"], "mode": "incremental", "skipStages": ["encode"]}, "never runs"),
    ("spec", {**indexjob()["spec"], "mode": "incremental", "evaluation": {"queries": "s3://b/q.jsonl"}},
     "evaluation applies to mode full only"),
    ("spec.evaluation", {"queries": "queries.jsonl"}, "does not match"),
    ("spec.evaluation", {"queries": "http://example.com/q.jsonl"}, "does not match"),
    ("spec.evaluation", {"queries": "s3://bucket/q.jsonl\nrm -rf /"}, "does not match"),
    ("spec.evaluation", {"queries": "s3://bucket/" + "q" * 1_000_000}, "is too long"),
    ("spec.evaluation", {"queries": "/data/q.jsonl"}, "evaluation.queries is a local path"),
    ("spec.evaluation", {"queries": "s3://b/q.jsonl", "maxP99Ms": 1e12}, "greater than the maximum"),
    ("spec.retry", 2**31, "greater than the maximum"),
    ("spec.image", "not an image!", "does not match"),
    ("spec.image", "ghcr.io/org/mmsearch:0.1.0\nevil: 1", "does not match"),
    # the collection's layout (push-milvus --fields / --bm25-fields)
    ("spec.milvus.fields", [{"name": "1st", "type": "keyword"}], "'1st' does not match"),
    ("spec.milvus.fields", [{"name": "genre", "type": "text"}], "'text' is not one of"),
    ("spec.milvus.fields", [{"name": "genre"}], "'type' is a required property"),
    ("spec.milvus.fields", [{"name": "genre", "type": "keyword", "source": ""}], "should be non-empty"),
    ("spec.milvus.fields", [{"name": "text", "type": "keyword"}], "the collection's own fields"),
    ("spec.milvus.bm25", {"analyzer": "english"}, "'fields' is a required property"),
    ("spec.milvus.bm25", {"fields": []}, "should be non-empty"),
    ("spec.milvus.bm25", {"fields": ["question,answer"]}, "does not match"),
    ("spec.milvus.bm25", {"fields": [" question"]}, "does not match"),
    ("spec.milvus.bm25", {"fields": ["question"], "analyzer": "french"}, "is not one of"),
    ("spec.source.ocr", {"engine": "easyocr"}, "is not one of"),
    ("spec.source.ocr", {"timeoutSeconds": 5}, "'engine' is a required property"),
    ("spec.source.ocr", {"engine": "rapidocr", "timeoutSeconds": 0}, "less than the minimum"),
    ("spec.source.frames", {"everySeconds": 0}, "less than the minimum"),
    ("spec.source.frames", {"sceneThreshold": 1.5}, "greater than the maximum"),
])

def test_malformed_indexjobs_are_refused_by_the_schema(path, value, needle):
    errors = schema_errors(_mutate(indexjob(), path, value))
    assert any(needle in e for e in errors), errors


@pytest.mark.parametrize("path,value", [
    ("spec.resources", {"limits": {"memory": "2Gi", "cpu": "500m", "nvidia.com/gpu": 1}}),
    ("spec.encode", {"shards": 4, "parallelism": 2}),
    ("spec.mongo", {"uri": "mongodb+srv://reader@cluster.example/?authSource=admin"}),
    ("spec.s3", {"endpointUrl": "http://minio.storage:9000"}),
    ("spec.env", [{"name": "HF_HUB_OFFLINE", "value": "1"}]),
    ("spec.milvus.fields", [{"name": "category", "type": "keyword"}, {"name": "_year", "type": "number",
                                                                      "source": "meta:year"}]),
    ("spec.milvus.bm25", {"fields": ["question", "answer text"], "analyzer": "standard"}),
    # once refused by `size(self) < 6` although the operator runs it: publish is left
    ("spec.skipStages", ["prepare", "export", "encode", "push-milvus", "push-mongo", "evaluate"]),
    ("spec.evaluation", {"queries": "s3://bucket/sets/q.jsonl", "maxP99Ms": 250}),
    ("spec.image", "registry.local:5000/team/mmsearch-jobs@sha256:" + "a" * 64),
    ("spec.source", {"kind": "video", "uri": "s3://media/clips/", "baseUrl": "https://cdn.example.com/clips/",
                     "ocr": {"engine": "rapidocr", "timeoutSeconds": 12.5},
                     "frames": {"everySeconds": 2, "sceneThreshold": 0.4}}),
])
def test_valid_values_near_the_new_rules_pass(path, value):
    assert schema_errors(_mutate(indexjob(), path, value)) == []


def test_the_operators_field_tree_is_the_crds():
    """spec.FIELDS (the operator's unknown-field check) must be the CRD's tree of declared fields."""
    def tree(schema):
        props = schema.get("properties")
        if schema.get("type") == "object" and props and not schema.get("x-kubernetes-preserve-unknown-fields"):
            return {key: tree(sub) for key, sub in props.items()}
        return None

    assert tree(crd_schema()["properties"]["spec"]) == ij_spec.FIELDS


def test_a_valid_indexjob_passes_the_schema():
    assert schema_errors(indexjob()) == []


def _skip_specs():
    """The skipStages subsets of each mode's stages that leave at most two stages (where "nothing would
    run" is decided), with publish on and off, with and without evaluation."""
    from itertools import combinations

    for mode in ("full", "incremental", "restore"):
        stages = ij_spec.MODES[mode]
        for n in range(max(0, len(stages) - 2), len(stages) + 1):
            for skipped in combinations(stages, n):
                for enabled in (True, False):
                    for evaluation in ((None, {"queries": "s3://bucket/q.jsonl"}) if mode == "full" else (None,)):
                        spec = {"mode": mode, "skipStages": list(skipped), "publish": {"enabled": enabled}}
                        if mode == "restore":
                            spec["restore"] = {"from": "s3://bucket/snapshots/stdlib/1"}
                        if evaluation:
                            spec["evaluation"] = evaluation
                        yield spec


def test_the_crd_and_the_operator_agree_on_every_skip_combination():
    """The CRD once refused IndexJobs the operator ran (size(skipStages) < 6 predated evaluate and sync)."""
    import celpy

    from mmsearch.operator.validate import validate

    schema = crd_schema()["properties"]["spec"]
    env = celpy.Environment()
    rules = [env.program(env.compile(rule["rule"])) for rule in schema["x-kubernetes-validations"]]
    disagree = []
    for overrides in _skip_specs():
        obj = indexjob(**overrides)
        spec = apply_defaults(schema, copy.deepcopy(obj["spec"]))
        activation = {"self": celpy.json_to_cel(spec)}
        by_crd = not all(bool(rule.evaluate(activation)) for rule in rules)
        by_operator = bool(validate(ij_spec.with_defaults(obj["spec"]), obj["metadata"]))
        if by_crd != by_operator:
            disagree.append((overrides, by_crd, by_operator))
    assert not disagree, disagree[:5]


_INCREMENTAL = {"mode": "incremental"}
_DROP = object()  # the field is left out


@pytest.mark.parametrize("overrides,refused", [
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *"}}, False),
    ({**_INCREMENTAL, "schedule": {"cron": "@daily", "concurrencyPolicy": "Forbid", "suspend": True,
                                   "startingDeadlineSeconds": 300, "successfulRunsHistoryLimit": 0,
                                   "failedRunsHistoryLimit": 5}}, False),
    ({**_INCREMENTAL, "schedule": {"cron": "*/15 1-5/2 1,15 JAN-jun mon-fri"}}, False),
    ({**_INCREMENTAL, "schedule": {"cron": "0 0 ? * SUN"}}, False),
    ({"schedule": {"cron": "0 3 * * *"}}, True),  # mode full
    ({**_INCREMENTAL, "schedule": {}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "60 3 * * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 24 * * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * 8"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "*/0 * * * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "*/1000 * * * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": " 0 3 * * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *\n0 4 * * *"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "@sometimes"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *", "concurrencyPolicy": "Queue"}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *", "startingDeadlineSeconds": 5}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *", "successfulRunsHistoryLimit": 101}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *", "failedRunsHistoryLimit": -1}}, True),
    ({**_INCREMENTAL, "schedule": {"cron": "0 3 * * *", "suspend": "yes"}}, True),
    ({"rollback": 2}, False),
    ({"rollback": -1}, True),
    ({"rollback": "back"}, True),
    # snapshots, and restore (mode restore needs no source, model or modality: the snapshot has them)
    ({"snapshots": {"location": "s3://mmsearch/snapshots", "cron": "@daily", "keep": 7, "request": 1}}, False),
    ({"snapshots": {"location": "s3://mmsearch/snapshots"}}, False),
    ({"snapshots": {"cron": "@daily"}}, True),
    ({"snapshots": {"location": "snapshots"}}, True),
    ({"snapshots": {"location": "s3://mmsearch/snapshots", "cron": "0 25 * * *"}}, True),
    ({"snapshots": {"location": "s3://mmsearch/snapshots", "keep": 0}}, True),
    ({"snapshots": {"location": "s3://mmsearch/snapshots", "request": -1}}, True),
    ({"mode": "restore", "restore": {"from": "s3://mmsearch/snapshots/search/demo/20260101T000000Z"},
      "source": _DROP, "model": _DROP, "modality": _DROP}, False),
    ({"mode": "restore", "restore": {"from": "s3://mmsearch/snap/1"}, "skipStages": ["publish"]}, False),
    ({"mode": "restore"}, True),
    ({"mode": "restore", "restore": {"from": "snap/1"}}, True),
    ({"restore": {"from": "s3://mmsearch/snap/1"}}, True),
    ({"mode": "restore", "restore": {"from": "s3://mmsearch/snap/1"}, "skipStages": ["encode"]}, True),
    ({"mode": "restore", "restore": {"from": "s3://mmsearch/snap/1"}, "skipStages": ["restore", "publish"]}, True),
    ({"mode": "restore", "restore": {"from": "s3://mmsearch/snap/1"},
      "evaluation": {"queries": "s3://mmsearch/q.jsonl"}}, True),
    ({"mode": "full", "source": _DROP}, True),
])
def test_the_crd_and_the_operator_agree_on_schedules_rollbacks_snapshots_and_restores(overrides, refused):
    """Every value the CRD refuses at apply time, the operator refuses too (an object no API server
    checked), and the other way round, apart from what a pattern cannot say (BEYOND_THE_SCHEMA)."""
    from mmsearch.operator.validate import validate

    obj = indexjob(**{k: v for k, v in overrides.items() if v is not _DROP})
    for key in [k for k, v in overrides.items() if v is _DROP]:
        obj["spec"].pop(key)
    by_crd = bool(schema_errors(obj))
    by_operator = bool(validate(ij_spec.with_defaults(obj["spec"]), obj["metadata"]))
    assert (by_crd, by_operator) == (refused, refused), (schema_errors(obj), validate(
        ij_spec.with_defaults(obj["spec"]), obj["metadata"]))


@pytest.mark.parametrize("cron,needle", [
    ("5-1 * * * *", "goes backwards"),  # a range the pattern cannot order
    ("0 0 30 2 *", "never fires"),  # a day that never comes
])
def test_beyond_the_schema_the_operator_refuses_cron_expressions_that_cannot_run(cron, needle):
    from mmsearch.operator.validate import validate

    obj = indexjob(mode="incremental", schedule={"cron": cron})
    assert schema_errors(obj) == []
    assert any(needle in p for p in validate(ij_spec.with_defaults(obj["spec"]), obj["metadata"]))
