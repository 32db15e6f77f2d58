"""Stage Job manifests: valid batch/v1 Jobs (Kubernetes OpenAPI schema, offline) for every stage
and option combination, carrying the job CLI's flags, owner references, labels and secrets."""
from __future__ import annotations

import itertools

import kubernetes_validate
import pytest

from mmsearch.operator import plan
from mmsearch.operator.manifests import build_job, stage_args, stage_env
from mmsearch.operator.spec import STAGES, with_defaults
from tests.operator.helpers import K8S_VERSION, indexjob

OPTIONS = {
    "modality": ["text", "image"],
    "shards": [1, 4],
    "mongo": ["uri", "secret"],
    "storage": ["s3", "volume"],
    "extras": [False, True],  # resources, node selection, index params, env, s3 creds, deadline...
}


def _variant(modality, shards, mongo, storage, extras):
    spec = {"encode": {"shards": shards}}
    if modality == "image":
        spec |= {"modality": "image", "source": {"kind": "images", "uri": "s3://img/photos/",
                                                 "baseUrl": "https://cdn.example.com/"},
                 "model": {"source": "openai/clip-vit-base-patch32", "name": "clip", "family": "clip",
                           "repository": "s3://mmsearch/models"}}
    spec["mongo"] = ({"uri": "mongodb://mongo:27017"} if mongo == "uri"
                     else {"uriSecret": {"name": "mongo-cred", "key": "connection"}, "collection": "docs"})
    spec["evaluation"] = {"queries": "s3://mmsearch/queries.jsonl"}
    if storage == "volume":
        spec |= {"workdir": "/data/work", "volume": {"claimName": "shared", "mountPath": "/data"}}
        spec["model"] = {**indexjob()["spec"]["model"], **spec.get("model", {}), "repository": "/data/models"}
    if extras:
        spec["encode"] |= {"resources": {"limits": {"nvidia.com/gpu": 1, "memory": "8Gi"},
                                         "requests": {"cpu": "2"}},
                           "nodeSelector": {"nvidia.com/gpu.present": "true"},
                           "tolerations": [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
                           "parallelism": 2, "batchSize": 256}
        spec |= {"resources": {"requests": {"cpu": "250m", "memory": "1Gi"}},
                 "milvus": {"uri": "http://milvus:19530", "indexType": "HNSW", "metric": "COSINE",
                            "indexParams": {"M": 16, "efConstruction": 200},
                            "tokenSecret": {"name": "milvus-cred"}},
                 "env": [{"name": "LOG_LEVEL", "value": "DEBUG"},
                         {"name": "TOKEN", "valueFrom": {"secretKeyRef": {"name": "t", "key": "k"}}}],
                 "s3": {"endpointUrl": "http://minio:9000", "region": "us-east-1", "credentialsSecret": "s3-cred"},
                 "serviceAccountName": "indexer", "imagePullSecrets": ["regcred"], "activeDeadlineSeconds": 7200,
                 "evaluation": {"queries": "s3://mmsearch/queries.jsonl", "k": 5, "minRecall": 0.8, "maxRegression": 0.02,
                                "maxP99Ms": 50, "force": True}}
        spec["mongo"]["collection"] = "{collection}"  # summaries per version
        if modality == "text":
            spec["source"] = {"kind": "qa", "uri": "s3://data/qa.jsonl",
                              "fields": {"question": "title", "answer": "body", "id": "qid"}}
            spec["milvus"] |= {"fields": [{"name": "category", "type": "keyword"},
                                          {"name": "year", "type": "number", "source": "meta:year, first"}],
                               "bm25": {"fields": ["question", "answer"]}}
    return indexjob(**spec)


def _jobs(obj):
    spec = with_defaults(obj["spec"])
    fps = plan.fingerprints(spec)
    version = plan.collection_version(obj["metadata"], 1)
    for stage in STAGES:
        if stage == "evaluate" and not spec.get("evaluation"):
            continue  # only built for an IndexJob with an evaluation set
        name = plan.job_name(obj["metadata"], stage, 1, fps[stage])
        if stage == "restore":  # mode restore: a spec of its own
            restoring = with_defaults(obj["spec"] | {"mode": "restore", "restore": {"from": "s3://mmsearch/snap/1"}})
            yield stage, restoring, build_job(obj, restoring, stage, name=name, generation=1,
                                              fingerprint=fps[stage], version=version)
            continue
        yield stage, spec, build_job(obj, spec, stage, name=name, generation=1, fingerprint=fps[stage],
                                     version=version)
    # the actions between runs
    yield "rollback", spec, build_job(obj, spec, "rollback", name=f"{obj['metadata']['name']}-rollback-0000",
                                      generation=1, fingerprint="f", version=version)
    snapping = with_defaults(obj["spec"] | {"snapshots": {"location": "s3://mmsearch/snapshots"}})
    yield "snapshot", snapping, build_job(obj, snapping, "snapshot", name=f"{obj['metadata']['name']}-snapshot-0000",
                                          generation=1, fingerprint="f", version=version,
                                          target="s3://mmsearch/snapshots/search/demo/20260101T000000Z")


@pytest.mark.parametrize("combo", list(itertools.product(*OPTIONS.values())),
                         ids=lambda c: "-".join(map(str, c)))
def test_every_stage_and_option_combination_is_a_valid_job(combo):
    obj = _variant(*combo)
    for stage, spec, job in _jobs(obj):
        kubernetes_validate.validate(job, K8S_VERSION, strict=True)
        (container,) = job["spec"]["template"]["spec"]["containers"]
        assert container["command"] == ["mmsearch", "job", "publish" if stage == "rollback" else stage]
        assert job["metadata"]["ownerReferences"] == [{
            "apiVersion": "mmsearch.io/v1alpha1", "kind": "IndexJob", "name": "demo",
            "uid": obj["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}]
        assert job["metadata"]["labels"]["mmsearch.io/indexjob"] == "demo"
        assert job["metadata"]["labels"]["mmsearch.io/stage"] == stage
        assert job["spec"]["template"]["metadata"]["labels"] == job["metadata"]["labels"]
        assert len(job["metadata"]["name"]) <= 63
        pod = job["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["restartPolicy"] == "Never"
        assert job["spec"]["ttlSecondsAfterFinished"] == 86400
        env = {e["name"]: e for e in container["env"]}
        if stage in ("push-mongo", "sync", "snapshot", "restore", "publish", "rollback"):  # publish: the write log
            if combo[2] == "secret":
                assert env["MMSEARCH_MONGO_URI"]["valueFrom"] == {
                    "secretKeyRef": {"name": "mongo-cred", "key": "connection"}}
            else:
                assert env["MMSEARCH_MONGO_URI"]["value"] == "mongodb://mongo:27017"
        else:
            assert "MMSEARCH_MONGO_URI" not in env
        if combo[4]:
            assert env["AWS_SECRET_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == {
                "name": "s3-cred", "key": "AWS_SECRET_ACCESS_KEY"}
            assert env["TOKEN"]["valueFrom"]["secretKeyRef"]["name"] == "t"
            assert env["MMSEARCH_S3_ENDPOINT_URL"]["value"] == "http://minio:9000"
            if stage in ("push-milvus", "evaluate", "publish", "sync", "rollback", "snapshot", "restore"):
                assert env["MMSEARCH_MILVUS_TOKEN"]["valueFrom"]["secretKeyRef"] == {
                    "name": "milvus-cred", "key": "token"}
        if stage not in ("push-milvus", "evaluate", "publish", "sync", "rollback", "snapshot", "restore"):
            assert "MMSEARCH_MILVUS_TOKEN" not in env
        if stage in ("evaluate", "publish", "rollback", "snapshot"):  # their outcome: the termination message
            assert container["terminationMessagePath"] == "/dev/termination-log"
            args = container["args"]
            assert args[args.index("--summary-file") + 1] == "/dev/termination-log"
        if combo[3] == "volume":
            assert {"name": "data", "mountPath": "/data"} in container["volumeMounts"]


def test_sharded_encode_is_an_indexed_job_passing_its_shard():
    obj = indexjob(encode={"shards": 4, "parallelism": 2, "nodeSelector": {"gpu": "yes"}})
    jobs = {stage: job for stage, _, job in _jobs(obj)}
    encode = jobs["encode"]["spec"]
    assert encode["completionMode"] == "Indexed" and encode["completions"] == 4 and encode["parallelism"] == 2
    assert encode["backoffLimitPerIndex"] == 2 and "backoffLimit" not in encode
    args = encode["template"]["spec"]["containers"][0]["args"]
    assert args[args.index("--shard") + 1] == "auto/4"
    assert encode["template"]["spec"]["nodeSelector"] == {"gpu": "yes"}
    for stage in ("prepare", "push-milvus"):
        assert "completionMode" not in jobs[stage]["spec"] and jobs[stage]["spec"]["backoffLimit"] == 2
        assert "nodeSelector" not in jobs[stage]["spec"]["template"]["spec"]


def test_stage_flags_follow_the_job_cli_contract():
    spec = with_defaults(_variant("image", 1, "uri", "s3", True)["spec"])
    w = "s3://mmsearch/work/search/demo/abc"
    assert stage_args("prepare", spec, w, None) == [
        "--workdir", w, "--source-kind", "images", "--source", "s3://img/photos/",
        "--base-url", "https://cdn.example.com/"]
    assert stage_args("export", spec, w, None) == [
        "--source-model", "openai/clip-vit-base-patch32", "--name", "clip", "--model-repository", "s3://mmsearch/models",
        "--model-version", "1", "--family", "clip", "--triton-max-batch-size", "64"]
    assert stage_args("encode", spec, w, None) == [
        "--workdir", w, "--model-repository", "s3://mmsearch/models", "--model", "clip-image", "--batch-size", "256"]
    assert stage_args("push-milvus", spec, w, "v1_x") == [
        "--workdir", w, "--milvus-uri", "http://milvus:19530", "--scene", "stdlib", "--version", "v1_x",
        "--model-repository", "s3://mmsearch/models", "--model", "clip-image", "--index-type", "HNSW",
        "--metric", "COSINE", "--batch-size", "1000", "--index-params", '{"M": 16, "efConstruction": 200}']
    assert stage_args("push-mongo", spec, w, "v1_x") == [
        "--workdir", w, "--database", "mmsearch", "--collection", "stdlib_v1_x", "--batch-size", "1000"]
    assert stage_args("evaluate", spec, w, "v1_x") == [
        "--milvus-uri", "http://milvus:19530", "--collection", "stdlib_v1_x", "--compare", "stdlib",
        "--queries", "s3://mmsearch/queries.jsonl", "--model-repository", "s3://mmsearch/models", "--workdir", w,
        "--k", "5", "--summary-file", "/dev/termination-log"]
    assert stage_args("publish", spec, w, "v1_x") == [
        "--milvus-uri", "http://milvus:19530", "--scene", "stdlib", "--version", "v1_x", "--keep", "2",
        "--summary-file", "/dev/termination-log", "--database", "mmsearch", "--collection", "{collection}",
        "--writes-database", "mmsearch", "--model-repository", "s3://mmsearch/models",
        "--report", f"{w}/evaluation/stdlib_v1_x.json", "--min-recall", "0.8", "--max-regression", "0.02",
        "--max-p99-ms", "50", "--force"]
    assert stage_args("sync", spec, w, None) == [
        "--workdir", w, "--milvus-uri", "http://milvus:19530", "--scene", "stdlib", "--model-repository",
        "s3://mmsearch/models", "--model", "clip-image", "--collection", "{collection}", "--database", "mmsearch",
        "--batch-size", "256", "--writes-database", "mmsearch"]
    plain = with_defaults(_variant("text", 1, "uri", "s3", False)["spec"])
    assert stage_args("push-mongo", plain, w, "v1_x")[4:6] == ["--collection", "stdlib"]
    assert stage_args("publish", plain, w, "v1_x")[-2:] == ["--max-regression", "0.05"]
    assert stage_args("rollback", plain, w, None) == [
        "--milvus-uri", "http://milvus:19530", "--scene", "stdlib", "--rollback", "--summary-file", "/dev/termination-log",
        "--database", "mmsearch", "--collection", "stdlib", "--writes-database", "mmsearch",
        "--model-repository", "s3://mmsearch/models"]
    text = with_defaults(_variant("text", 1, "uri", "s3", True)["spec"])
    assert stage_args("prepare", text, w, None)[4:] == [
        "--source", "s3://data/qa.jsonl", "--question-field", "title", "--answer-field", "body", "--id-field", "qid"]
    assert stage_args("encode", text, w, None)[-2:] == ["--text-field", "question"]
    templated = with_defaults({**text, "encode": {**text["encode"], "textTemplate": "{question}: {answer}"}})
    assert stage_args("encode", templated, w, None)[-2:] == ["--text-template", "{question}: {answer}"]
    assert "--text-field" not in stage_args("encode", templated, w, None)
    assert stage_args("push-milvus", text, w, "v1_x")[-6:] == [
        "--fields", '[{"name": "category", "type": "keyword"}, {"name": "year", "source": "meta:year, first", '
                    '"type": "number"}]',
        "--bm25-fields", "question,answer", "--bm25-analyzer", "english"]
    assert "--fields" not in stage_args("push-milvus", plain, w, "v1_x")
    assert "--bm25-fields" not in stage_args("push-milvus", plain, w, "v1_x")
    with pytest.raises(ValueError, match="needs the collection version"):
        stage_args("publish", text, w, None)


def test_names_workdir_and_version_are_deterministic():
    a, b = indexjob(), indexjob(uid="ffffffff-0000-0000-0000-000000000000")
    spec = with_defaults(a["spec"])
    fp = plan.fingerprints(spec)
    assert plan.job_name(a["metadata"], "encode", 1, fp["encode"]) == plan.job_name(
        indexjob()["metadata"], "encode", 1, fp["encode"])
    assert plan.job_name(a["metadata"], "encode", 1, fp["encode"]) != plan.job_name(a["metadata"], "encode", 2, fp["encode"])
    assert plan.job_name(a["metadata"], "encode", 1, fp["encode"]) != plan.job_name(b["metadata"], "encode", 1, fp["encode"])
    assert plan.collection_version(a["metadata"], 3) == "v3_0f1e2d3c"
    assert plan.run_workdir(spec, "search", "demo").startswith("s3://mmsearch/work/search/demo/")


@pytest.mark.parametrize("change,affected", [
    ({"milvus": {"uri": "http://milvus:19530", "indexType": "HNSW"}}, {"push-milvus", "evaluate", "publish"}),
    ({"mongo": {"uriSecret": {"name": "mongo", "key": "uri"}, "collection": "other"}},
     {"push-mongo", "evaluate", "publish", "sync", "restore"}),
    ({"milvus": {"uri": "http://milvus:19530", "bm25": {"fields": ["question"]}}}, {"push-milvus", "evaluate", "publish"}),
    ({"milvus": {"uri": "http://milvus:19530", "fields": [{"name": "c", "type": "bool"}]}},
     {"push-milvus", "evaluate", "publish"}),
    ({"milvus": {"uri": "http://milvus:19530", "fields": []}}, set()),
    ({"publish": {"keep": 5}}, {"publish"}),
    ({"model": {"source": "other/model", "name": "minilm", "repository": "s3://mmsearch/models"}},
     set(plan.STAGES) - {"restore"}),  # a restore reads its model from the snapshot
    ({"encode": {"batchSize": 8}}, {"prepare", "encode", "push-milvus", "push-mongo", "evaluate", "publish", "sync"}),
    ({"encode": {"textTemplate": "{question}: {answer}"}},
     {"prepare", "encode", "push-milvus", "push-mongo", "evaluate", "publish", "sync"}),
    ({"evaluation": {"queries": "s3://mmsearch/q.jsonl"}}, {"evaluate", "publish"}),
    ({"mode": "incremental"}, set()),
    ({"image": "other:2", "backoffLimit": 5, "retry": 3, "encode": {"resources": {"limits": {"cpu": "4"}}}}, set()),
])
def test_fingerprints_change_for_exactly_the_affected_stages(change, affected):
    base = plan.fingerprints(with_defaults(indexjob()["spec"]))
    new = plan.fingerprints(with_defaults(indexjob(**change)["spec"]))
    assert {s for s in plan.STAGES if base[s] != new[s]} == affected


@pytest.mark.parametrize("combo", [("text", 4, "secret", "volume", True), ("image", 1, "uri", "s3", False)],
                         ids=["text-sharded-extras", "image-plain"])
def test_every_jobs_command_line_parses_with_the_real_job_cli(combo, monkeypatch):
    """The manifest is the command that really runs: the real ``mmsearch job`` CLI accepts each
    stage's flags, with the environment the pod gets (secrets stand in as placeholders)."""
    import typer.main

    from mmsearch.jobs.cli import job_app
    from mmsearch.jobs.push_milvus import read_layout

    group = typer.main.get_command(job_app)
    for stage, _, job in _jobs(_variant(*combo)):
        container = job["spec"]["template"]["spec"]["containers"][0]
        for var in container["env"]:
            monkeypatch.setenv(var["name"], var.get("value", "from-a-secret"))
        command = group.get_command(None, container["command"][2])
        assert command is not None, f"mmsearch job has no {stage!r} command"
        ctx = command.make_context(f"mmsearch job {stage}", list(container["args"]))
        args = container["args"]
        if "--workdir" in args:
            assert ctx.params["workdir"] == args[args.index("--workdir") + 1]
        if stage in ("push-mongo", "sync", "publish", "rollback"):
            assert ctx.params["mongo_uri"] in ("mongodb://mongo:27017", "from-a-secret")
        if stage in ("publish", "rollback", "sync"):  # what the replay of the write log reads (LogAccess)
            assert ctx.params["writes_database"] == "mmsearch"
            assert ctx.params["database"] == "mmsearch"
            assert ctx.params["collection"] == ("{collection}" if combo[4] else "docs" if combo[2] == "secret"
                                                else "stdlib")
            assert ctx.params["repository"] == ("/data/models" if combo[3] == "volume" else "s3://mmsearch/models")
        if stage == "push-milvus" and combo[0] == "text":  # the layout push-milvus builds from the flags
            layout = read_layout(ctx.params["fields"], ctx.params["bm25_fields"], ctx.params["bm25_analyzer"])
            assert [(f.name, f.type, f.key) for f in layout.fields] == [
                ("category", "keyword", "category"), ("year", "number", "meta:year, first")]
            assert layout.lexical.sources == ("question", "answer") and layout.lexical.analyzer == "english"


def test_publish_and_rollback_get_what_the_write_log_replay_needs():
    """publish and rollback replay the writer's log (mmsearch.jobs.replay): the MongoDB URI (from its
    Secret), the summaries' database and collection template, the log's database and the model
    repository reach the Job; a spec without MongoDB gives neither flags nor URI."""
    obj = indexjob(mongo={"uriSecret": {"name": "mongo-cred"}, "database": "docs", "collection": "{collection}",
                          "writeLogDatabase": "writes"})
    for stage, _, job in _jobs(obj):
        if stage not in ("publish", "rollback", "sync"):
            continue
        (container,) = job["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["MMSEARCH_MONGO_URI"]["valueFrom"] == {"secretKeyRef": {"name": "mongo-cred", "key": "uri"}}
        args = container["args"]
        flags = {flag: args[args.index(flag) + 1] for flag in ("--database", "--collection", "--writes-database",
                                                                "--model-repository")}
        assert flags == {"--database": "docs", "--collection": "{collection}", "--writes-database": "writes",
                         "--model-repository": "s3://mmsearch/models"}, stage
    bare = with_defaults({k: v for k, v in indexjob()["spec"].items() if k != "mongo"} | {"skipStages": ["push-mongo"]})
    for stage in ("publish", "rollback"):
        assert "--writes-database" not in stage_args(stage, bare, "s3://w", "v1_x")
        assert "MMSEARCH_MONGO_URI" not in {e["name"] for e in stage_env(stage, bare)}


def test_prepare_passes_ocr_and_the_video_sampling_to_the_job_cli():
    """spec.source.ocr and .frames become prepare's --ocr, --ocr-timeout, --frame-every and --scene-threshold
    (only those the spec gives: prepare's defaults hold otherwise); the real CLI reads them back."""
    import typer.main

    from mmsearch.jobs.cli import job_app
    from mmsearch.jobs.sources.image_text import OCR_ENGINES
    from mmsearch.operator.validate import OCR_ENGINES as OPERATOR_OCR_ENGINES, validate

    assert OPERATOR_OCR_ENGINES == OCR_ENGINES  # the operator cannot import jobs: its copy must be the same
    image = {"modality": "image", "model": {"source": "openai/clip-vit-base-patch32", "name": "clip",
                                            "family": "clip", "repository": "s3://mmsearch/models"}}
    video = indexjob(**image, source={"kind": "video", "uri": "s3://media/clips/", "baseUrl": "https://cdn/clips/",
                                      "ocr": {"engine": "rapidocr", "timeoutSeconds": 12.5},
                                      "frames": {"everySeconds": 2, "sceneThreshold": 0.4}})
    assert validate(with_defaults(video["spec"]), video["metadata"]) == []
    (job,) = [job for stage, _, job in _jobs(video) if stage == "prepare"]
    kubernetes_validate.validate(job, K8S_VERSION, strict=True)
    container = job["spec"]["template"]["spec"]["containers"][0]
    assert container["args"][3:] == ["video", "--source", "s3://media/clips/", "--base-url", "https://cdn/clips/",
                                     "--ocr", "rapidocr", "--ocr-timeout", "12.5", "--frame-every", "2",
                                     "--scene-threshold", "0.4"]
    command = typer.main.get_command(job_app).get_command(None, "prepare")
    params = command.make_context("mmsearch job prepare", list(container["args"])).params
    assert (params["source_kind"].value, params["ocr"], params["ocr_timeout"], params["frame_every"],
            params["scene_threshold"]) == ("video", "rapidocr", 12.5, 2.0, 0.4)
    photos = indexjob(**image, source={"kind": "images", "uri": "s3://img/", "ocr": {"engine": "tesseract"}})
    photos = with_defaults(photos["spec"])
    assert stage_args("prepare", photos, "s3://w", None)[4:] == ["--source", "s3://img/", "--ocr", "tesseract"]
    plain = with_defaults(indexjob(**image, source={"kind": "video", "uri": "s3://media/clips/"})["spec"])
    assert stage_args("prepare", plain, "s3://w", None)[4:] == ["--source", "s3://media/clips/"]  # prepare's defaults
    # another OCR engine or sampling re-runs prepare and what reads its corpus
    before, after = plan.fingerprints(with_defaults(video["spec"])), plan.fingerprints(plain)
    assert {s for s in plan.STAGES if before[s] != after[s]} >= {"prepare", "encode", "push-milvus", "push-mongo"}
