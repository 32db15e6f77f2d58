"""Text in images through prepare -> encode -> push -> search, over real sockets.

A folder of images the test draws (words in several fonts, sizes, rotations,
noise), photos with captions in sidecars, and images with no text at all is
indexed by the real jobs: ``prepare --ocr rapidocr`` reads the text, the tiny
random CLIP's image tower embeds the pixels, ``push-milvus --bm25-fields
caption,alt_text,ocr_text`` indexes the words. Serving answers a text query
in the BM25 arm and in the hybrid arm (CLIP fused with BM25, the text weighted
higher as an untrained CLIP deserves) with the image whose words match; the
CLIP arm alone cannot (random weights). The same
corpus embedded with MiniLM over a template of its text fields is a text
scene of its own (the text tower over OCR text and captions).
"""
from __future__ import annotations

import json
import shutil

import pytest
from PIL import Image

from tests.support.drawn_text import draw, fonts
from tests.support.images import IMAGE_MODEL, link_models
from tests.support.jobs import run_job
from tests.support.stack import search, start_stack, stub_of, t2i_config, t2t_config, write_config

pytestmark = pytest.mark.slow

SCENE, TEXT_SCENE = "shots", "shot_texts"
SIGNS = {  # file -> the words drawn in it
    "sign-bakery.png": "Fresh bread and coffee at the corner bakery",
    "sign-platform.png": "Platform 9 departures to the harbour",
    "sign-museum.png": "Museum of science closed on Mondays",
    "sign-pharmacy.png": "Night pharmacy open until midnight",
}
CAPTIONS = {"photo-bicycle.png": "A red bicycle leaning on a garden wall",
            "photo-lighthouse.png": "A white lighthouse on a rocky coast"}
ARMS = [{"name": "clip", "weight": 1},
        {"name": "bm25", "weight": 0, "overrides": {"match": {"retriever": "bm25"}}},
        {"name": "fused", "weight": 0, "overrides": {"match": {"retriever": "hybrid", "fusion": {  # CLIP untrained
            "name": "weighted", "params": {"weights": {"dense": 0.3, "bm25": 0.7}, "norm": "minmax"}}}}}]
SUMMARY = ["name", "url", "caption", "alt_text", "ocr_text"]


@pytest.fixture(scope="module")
def shots(tmp_path_factory, tiny_clip_repo, minilm_repo, mongo_server, service_loop):
    tmp = tmp_path_factory.mktemp("image-text")
    folder = tmp / "images"
    folder.mkdir()
    loaders = fonts()
    for i, (name, text) in enumerate(SIGNS.items()):
        _, load = loaders[i % len(loaders)]
        draw(text.replace(" to ", "\nto ").replace(" on ", "\non "), load(28), rotation=(0, 3, -4, 0)[i],
             noise=(0, 0.02, 0, 0.03)[i], seed=i).save(folder / name)
    for i, (name, caption) in enumerate(CAPTIONS.items()):
        Image.new("RGB", (96, 72), (180, 40 * i, 60)).save(folder / name)
        (folder / f"{name}.txt").write_text(caption)
    for i in range(3):
        Image.new("RGB", (80, 80), (20 * i, 90, 200)).save(folder / f"plain-{i}.png")  # no text at all
    repo, work, milvus = tmp / "repo", tmp / "work", str(tmp / "milvus.db")
    models = link_models(repo, tiny_clip_repo / "tiny-clip", tiny_clip_repo / IMAGE_MODEL, minilm_repo / "minilm")
    result = run_job("prepare", "--workdir", str(work), "--source-kind", "images", "--source", str(folder),
                     "--ocr", "rapidocr", "--ocr-timeout", "600")  # a loaded CI machine is slow
    assert json.loads(result.stdout.strip().splitlines()[-1])["skips"] == {}
    run_job("encode", "--workdir", str(work), "--repository", str(repo), "--model", IMAGE_MODEL)
    text_work = tmp / "text-work"  # the same corpus, embedded by the text tower over its text fields
    text_work.mkdir()
    shutil.copy(work / "corpus.jsonl", text_work / "corpus.jsonl")
    run_job("encode", "--workdir", str(text_work), "--repository", str(repo), "--model", "minilm",
            "--text-template", "{caption} {alt_text} {ocr_text}", "--device", "cpu")
    for scene, workdir, model in ((SCENE, work, IMAGE_MODEL), (TEXT_SCENE, text_work, "minilm")):
        run_job("push-milvus", "--workdir", str(workdir), "--milvus-uri", milvus, "--scene", scene, "--version", "1",
                "--repository", str(repo), "--model", model, "--bm25-fields", "caption,alt_text,ocr_text")
        run_job("publish", "--milvus-uri", milvus, "--scene", scene, "--version", "1")
    run_job("push-mongo", "--workdir", str(work), "--mongo-uri", mongo_server, "--collection", SCENE)
    config = t2i_config(SCENE, candidates=9)
    config["scenes"][SCENE]["defaults"]["summary"]["fields"] = SUMMARY
    config["scenes"][SCENE]["layers"].append({"name": "retrieval", "arms": ARMS})
    text = t2t_config(TEXT_SCENE, model="minilm")["scenes"][TEXT_SCENE]
    text["defaults"]["summary"].update(collection=SCENE, fields=SUMMARY)
    config["scenes"][TEXT_SCENE] = text
    experiments = tmp / "experiments.yaml"
    write_config(experiments, config)
    stack = start_stack(service_loop, models=models, experiments=experiments, milvus_uri=milvus,
                        mongo_uri=mongo_server, model_repository=str(repo))
    yield stack
    stack.close()


stub = stub_of("shots")


def names(response) -> list[str]:
    return [item.summary["name"] for item in response.items]


@pytest.mark.parametrize("query, expected", [
    ("harbour departures", "sign-platform.png"),
    ("science museum", "sign-museum.png"),
    ("pharmacy open at midnight", "sign-pharmacy.png"),
    ("bicycle", "photo-bicycle.png"),
    ("lighthouse coast", "photo-lighthouse.png"),
])
@pytest.mark.parametrize("arm", ["bm25", "fused"])
def test_the_words_in_an_image_or_its_caption_find_it(stub, arm, query, expected):
    response = search(stub, SCENE, text=query, top_k=3, force_arms={"retrieval": arm})
    assert names(response)[0] == expected, names(response)


def test_the_summary_returns_the_text_read_and_the_caption(stub):
    response = search(stub, SCENE, text="corner bakery", top_k=1, force_arms={"retrieval": "bm25"})
    summary = response.items[0].summary
    assert summary["name"] == "sign-bakery.png" and "bakery" in summary["ocr_text"].lower()
    response = search(stub, SCENE, text="bicycle", top_k=1, force_arms={"retrieval": "bm25"})
    assert response.items[0].summary["caption"] == CAPTIONS["photo-bicycle.png"]


def test_images_without_text_are_indexed_and_found_by_clip_only(stub):
    everything = search(stub, SCENE, text="anything", top_k=9, force_arms={"retrieval": "clip"})
    assert {f"plain-{i}.png" for i in range(3)} <= set(names(everything))  # CLIP reaches every image
    lexical = search(stub, SCENE, text="bread coffee bicycle lighthouse museum pharmacy harbour", top_k=9,
                     force_arms={"retrieval": "bm25"})
    assert not {n for n in names(lexical) if n.startswith("plain-")}  # no text: nothing for BM25 to match


@pytest.mark.parametrize("query, expected", [
    ("a cyclist's bike", "photo-bicycle.png"),
    ("where to buy medicine late at night", "sign-pharmacy.png"),
    ("trains leaving for the port", "sign-platform.png"),
])
def test_the_text_tower_over_ocr_and_captions_finds_by_meaning(stub, query, expected):
    response = search(stub, TEXT_SCENE, text=query, top_k=3)
    assert names(response)[0] == expected, names(response)
