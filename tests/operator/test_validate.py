"""Checks the CRD schema cannot express: each problem names its field."""
from __future__ import annotations

import pytest

from mmsearch.operator.spec import with_defaults
from mmsearch.operator.validate import validate
from tests.operator.helpers import indexjob


def _problems(name="demo", **spec):
    obj = indexjob(name, **spec)
    return validate(with_defaults(obj["spec"]), obj["metadata"])


def test_a_valid_spec_has_no_problems():
    assert _problems() == []
    assert _problems(workdir="/data/w", volume={"claimName": "c", "mountPath": "/data"},
                     model={"source": "m", "name": "n", "repository": "/data/models"}) == []


@pytest.mark.parametrize("name,spec,needle", [
    ("x" * 41, {}, "metadata.name: "),
    ("Bad_Name", {}, "metadata.name: "),
    ("demo", {"modality": "image"}, "spec.source.kind: 'stdlib' corpora need spec.modality 'text'"),
    ("demo", {"source": {"kind": "qa"}}, "spec.source.uri is required for source.kind 'qa'"),
    ("demo", {"source": {"kind": "stdlib", "fields": {"question": "q"}}}, "spec.source.fields applies to"),
    ("demo", {"source": {"kind": "stdlib", "baseUrl": "http://x"}}, "spec.source.baseUrl applies to"),
    # OCR and video frames: prepare's options, for the kinds that take them
    ("demo", {"modality": "image", "source": {"kind": "video"}}, "spec.source.uri is required for source.kind 'video'"),
    ("demo", {"source": {"kind": "video", "uri": "s3://m/v/"}}, "spec.source.kind: 'video' corpora need spec.modality "
                                                                 "'image'"),
    ("demo", {"source": {"kind": "qa", "uri": "s3://d/qa.jsonl", "ocr": {"engine": "rapidocr"}}},
     "spec.source.ocr applies to source.kind 'images' and 'video' only: remove it"),
    ("demo", {"modality": "image", "source": {"kind": "images", "uri": "s3://b/i", "frames": {"everySeconds": 5}}},
     "spec.source.frames applies to source.kind 'video' only"),
    ("demo", {"modality": "image", "source": {"kind": "images", "uri": "s3://b/i", "ocr": {"engine": "easyocr"}}},
     "spec.source.ocr.engine: 'easyocr' is not one of none, rapidocr, tesseract"),
    ("demo", {"modality": "image", "source": {"kind": "video", "uri": "s3://m/v/", "frames": {"sceneThreshold": 2}}},
     "spec.source.frames.sceneThreshold: 2 must be a number between 0.0 and 1.0"),
    ("demo", {"modality": "image", "source": {"kind": "video", "uri": "s3://m/v/",
                                              "ocr": {"engine": "tesseract", "timeoutSeconds": "30"}}},
     "spec.source.ocr.timeoutSeconds: '30' must be a number at least 0.001 (seconds)"),
    ("demo", {"source": {"kind": "stdlib", "ocr": {"engine": "rapidocr"}}}, "spec.source.ocr applies to"),
    ("demo", {"workdir": "/data/work"}, "spec.workdir: '/data/work' is a local path"),
    ("demo", {"workdir": "/elsewhere", "volume": {"claimName": "c", "mountPath": "/data"}},
     "spec.workdir: '/elsewhere' is not under spec.volume.mountPath '/data'"),
    ("demo", {"workdir": "s3://A_b/x"}, "spec.workdir: 's3://A_b/x' is not a valid S3 URI"),
    ("demo", {"workdir": "gs://b/x"}, "spec.workdir: 'gs://b/x' must be an s3:// URI"),
    ("demo", {"model": {"source": "m", "name": "n", "repository": "models"}}, "spec.model.repository: "),
    ("demo", {"mongo": None}, "spec.mongo: set exactly one of mongo.uri and mongo.uriSecret"),
    ("demo", {"mongo": {"uri": "mongodb://m", "uriSecret": {"name": "s"}}}, "spec.mongo: set exactly one"),
    ("demo", {"milvus": None}, "spec.milvus.uri is required"),
    ("demo", {"scene": ""}, "spec.scene is required"),
    # The API server prunes unknown fields, so a typo ran with the default; an object the
    # API server did not check must not run wrong either.
    ("demo", {"encode": {"shard": 4}}, "spec.encode.shard: unknown field"),
    ("demo", {"mongo": {"uriSecret": {"name": "m"}, "colection": "x"}}, "spec.mongo.colection: unknown field"),
    ("demo", {"sourc": {"kind": "qa"}}, "spec.sourc: unknown field"),
    ("demo", {"encode": {"shards": 2, "parallelism": 3}}, "spec.encode.parallelism: 3 is more than encode.shards (2)"),
    # what encode embeds, as encode reads it
    ("demo", {"encode": {"textTemplate": "{title!r}"}}, "spec.encode.textTemplate: text template '{title!r}': "),
    ("demo", {"encode": {"textTemplate": "no field"}}, "spec.encode.textTemplate: text template 'no field': names no"),
    ("demo", {"encode": {"textField": "a.b"}}, "spec.encode.textField: text field 'a.b': name one corpus field"),
    ("demo", {"modality": "image", "source": {"kind": "images", "uri": "s3://b/i"},
              "encode": {"textTemplate": "{name}"}}, "spec.encode.textTemplate applies to modality text only"),
    ("demo", {"mongo": {"uri": "mongodb://root:hunter2@mongo:27017"}}, "spec.mongo.uri: holds a password"),
    ("demo", {"skipStages": ["prepare", "export", "encode", "push-milvus", "push-mongo"], "publish": {"enabled": False}},
     "spec.skipStages: every stage is skipped"),
    # the layout as push-milvus reads it; duplicates are what the CRD's list-map keys refuse at apply time
    ("demo", {"milvus": {"uri": "http://m", "fields": [{"name": "a", "type": "keyword"}, {"name": "a", "type": "bool"}]}},
     "spec.milvus.fields: 'a' is declared twice"),
    ("demo", {"milvus": {"uri": "http://m", "fields": [{"name": "id", "type": "keyword"}]}},
     "spec.milvus.fields[0].name: field name 'id' is reserved"),
    ("demo", {"milvus": {"uri": "http://m", "fields": [{"name": "a", "type": "keyword", "sorce": "b"}]}},
     "spec.milvus.fields[0].sorce: Extra inputs are not permitted"),
    ("demo", {"milvus": {"uri": "http://m", "fields": [{"name": "a", "type": "date"}]}}, "spec.milvus.fields[0].type: "),
    ("demo", {"milvus": {"uri": "http://m", "bm25": {"fields": []}}}, "spec.milvus.bm25.fields: list the corpus keys"),
    ("demo", {"milvus": {"uri": "http://m", "bm25": {"fields": ["a,b"]}}}, "spec.milvus.bm25.fields[0]: 'a,b'"),
    ("demo", {"milvus": {"uri": "http://m", "bm25": {"fields": ["a"], "analyzer": "klingon"}}},
     "spec.milvus.bm25.analyzer: 'klingon' is not one of english, standard"),
    ("demo", {"milvus": {"uri": "http://m", "bm25": {"field": ["a"]}}}, "spec.milvus.bm25.field: unknown field"),
    # spec.evaluation was silently ignored with mode incremental, and its query set never checked
    ("demo", {"mode": "incremental", "evaluation": {"queries": "s3://bucket/q.jsonl"}},
     "spec.evaluation applies to mode full only"),
    ("demo", {"evaluation": {"queries": "queries.jsonl"}}, "spec.evaluation.queries: 'queries.jsonl' must be an s3://"),
    ("demo", {"evaluation": {"queries": "http://example.com/q.jsonl"}}, "spec.evaluation.queries: 'http://"),
    ("demo", {"evaluation": {"queries": "/data/q.jsonl"}}, "spec.evaluation.queries: '/data/q.jsonl' is a local path"),
    ("demo", {"evaluation": {"queries": "s3://bucket/" + "q" * 1_000_000}}, "at most 1024 characters"),
    ("demo", {"evaluation": {"queries": "s3://bucket/q.jsonl\nx"}}, "without spaces or line breaks"),
    ("demo", {"evaluation": {"queries": "s3://bucket/q.jsonl", "minRecall": float("nan")}},
     "spec.evaluation.minRecall nan: give a recall from 0 to 1"),
    ("demo", {"evaluation": {"queries": "s3://bucket/q.jsonl", "maxP99Ms": -5}}, "spec.evaluation.maxP99Ms -5"),
    # skips of stages the mode never runs were accepted silently; an image reference was never checked
    ("demo", {"mode": "incremental", "skipStages": ["encode"]}, "spec.skipStages: 'encode' is not a stage of mode"),
    ("demo", {"skipStages": ["sync"]}, "spec.skipStages: 'sync' is not a stage of mode full"),
    ("demo", {"image": "not an image!"}, "spec.image: 'not an image!' is not a container image reference"),
])
def test_problems_name_the_field(name, spec, needle):
    problems = _problems(name, **spec)
    assert any(needle in p for p in problems), problems


def test_a_password_in_mongo_uri_is_never_echoed():
    problems = _problems(mongo={"uri": "mongodb://root:hunter2@mongo:27017"})
    assert problems and not any("hunter2" in p for p in problems), problems


def test_open_maps_and_free_lists_take_any_keys():
    assert _problems(encode={"nodeSelector": {"pool": "gpu"}, "tolerations": [{"key": "k", "anything": 1}],
                             "resources": {"limits": {"nvidia.com/gpu": 1}}},
                     milvus={"uri": "http://m:19530", "indexParams": {"M": 16}},
                     env=[{"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}]) == []


def test_a_layout_push_milvus_accepts_has_no_problems():
    assert _problems(milvus={"uri": "http://m", "fields": [{"name": "category", "type": "keyword"},
                                                           {"name": "year", "type": "number", "source": "y"}],
                             "bm25": {"fields": ["question", "answer"]}}) == []


def test_a_text_template_encode_accepts_has_no_problems():
    assert _problems(encode={"textTemplate": "{question}: {answer}"}) == []


def test_skipping_push_mongo_needs_no_mongo_target():
    assert _problems(mongo=None, skipStages=["push-mongo"]) == []


def test_every_stage_but_publish_skipped_in_full_mode_is_runnable():
    """The CRD refused it (size(skipStages) < 6) although the operator runs publish."""
    assert _problems(skipStages=["prepare", "export", "encode", "push-milvus", "push-mongo", "evaluate"]) == []
