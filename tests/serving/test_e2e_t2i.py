"""End to end T2I over real sockets: a tiny random CLIP, an image corpus indexed by the real jobs.

The images are generated, served by ``http.server`` on 127.0.0.1 and indexed by
``mmsearch job prepare --source-kind images --base-url`` -> ``encode`` (the
vision tower fetches every URL) -> ``push-milvus`` -> ``push-mongo`` ->
``publish``. The CLIP weights are random, so "the expected documents" are
defined by brute force: the exported text tower's embedding of the query
against every encoded image vector (exact inner products), and for an image
query, the very image (its own vector, similarity 1).
"""
from __future__ import annotations

import io
from pathlib import Path

import grpc
import numpy as np
import pytest

from mmsearch.v1 import retrieval_pb2
from mmsearch.dev.folders import serve_folder
from tests.support.images import build_image_index, link_models, write_images
from tests.support.loops import eventually
from tests.support.stack import start_stack, stub_of, write_config
from tests.support.stack import t2i_config as scene_config

pytestmark = pytest.mark.slow

SCENE = "t2i"
N_IMAGES = 16


def t2i_config(text_model: str = "tiny-clip") -> dict:
    return scene_config(SCENE, text_model=text_model, candidates=N_IMAGES)


@pytest.fixture(scope="module")
def image_site(tmp_path_factory):
    """Generated PNGs (varied sizes and modes) served over http on 127.0.0.1 (port 0)."""
    from mmsearch.jobs import parity

    folder = write_images(tmp_path_factory.mktemp("t2i-images"), parity.varied_images(N_IMAGES, seed=11))
    with serve_folder(folder) as base_url:
        yield folder, base_url


@pytest.fixture(scope="module")
def t2i_stack(image_site, tiny_clip_repo, minilm_repo, mongo_server, service_loop, tmp_path_factory):
    """Index the images with the real jobs, then preprocess + serving (embedded CLIP towers) on it.

    The model repository also holds MiniLM (linked), so a config pointing MiniLM at the CLIP-built
    collection can be tried and refused.
    """
    folder, base_url = image_site
    tmp = tmp_path_factory.mktemp("t2i")
    repo, work, milvus = tmp / "repo", tmp / "work", tmp / "milvus.db"
    models = link_models(repo, tiny_clip_repo / "tiny-clip", tiny_clip_repo / "tiny-clip-image", minilm_repo / "minilm")
    build_image_index(folder=folder, base_url=base_url, repo=repo, workdir=work, milvus=milvus,
                      mongo_uri=mongo_server, scene=SCENE)
    experiments = tmp / "experiments.yaml"
    write_config(experiments, t2i_config())
    stack = start_stack(service_loop, models=models, experiments=experiments, milvus_uri=str(milvus),
                        mongo_uri=mongo_server, model_repository=str(repo))
    stack.extra.update(repo=repo, work=work, folder=folder)
    yield stack
    stack.close()


stub = stub_of("t2i_stack")


@pytest.fixture(scope="module")
def corpus(t2i_stack) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(ids, vectors) as the encode job wrote them, and image name -> id from corpus.jsonl."""
    import json

    from mmsearch.jobs.encode import read_vectors

    _, chunks = read_vectors(str(t2i_stack.extra["work"]))
    ids, vectors = zip(*chunks)
    records = [json.loads(line) for line in (t2i_stack.extra["work"] / "corpus.jsonl").read_text().splitlines()]
    return np.concatenate(ids), np.concatenate(vectors), {r["name"]: r["id"] for r in records}


def text_embedding(repo: Path, text: str) -> np.ndarray:
    """The exported CLIP text tower on ``text`` (tokenizers + onnxruntime, no serving involved)."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(repo / "tiny-clip" / "tokenizer.json"))
    tokenizer.no_padding()
    encoding = tokenizer.encode(text)
    session = ort.InferenceSession(str(repo / "tiny-clip" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    feed = {"input_ids": np.array([encoding.ids], np.int64), "attention_mask": np.array([encoding.attention_mask], np.int64)}
    return session.run(None, {i.name: feed[i.name] for i in session.get_inputs()})[0][0]


def test_text_query_returns_the_brute_force_top_k(stub, t2i_stack, corpus):
    ids, vectors, _ = corpus
    assert len(ids) == N_IMAGES
    query = "a photo of stripes"
    scores = vectors @ text_embedding(t2i_stack.extra["repo"], query)
    expected = ids[np.argsort(-scores)[:5]]
    response = stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text=query), timeout=10)
    assert response.arm == "ranking=control"
    assert [item.id for item in response.items] == expected.tolist()
    assert [item.retrieval_score for item in response.items] == pytest.approx(np.sort(scores)[::-1][:5], abs=1e-4)
    first = response.items[0].summary
    assert first["name"].startswith("img") and first["url"].startswith("http://127.0.0.1:")


def test_image_query_finds_the_same_image(stub, corpus, t2i_stack):
    _, _, by_name = corpus
    for name in ("img03.png", "img10.png"):
        data = (t2i_stack.extra["folder"] / name).read_bytes()
        response = stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, image=data, top_k=3), timeout=10)
        assert response.items[0].id == by_name[name] and response.items[0].summary["name"] == name
        assert response.items[0].retrieval_score == pytest.approx(1.0, abs=1e-3)


def test_image_query_as_jpeg_with_mmr_arm(stub, corpus, t2i_stack):
    """Another encoding of the same picture still finds it; the forced MMR arm keeps the best first."""
    from PIL import Image

    _, _, by_name = corpus
    buffer = io.BytesIO()
    Image.open(t2i_stack.extra["folder"] / "img05.png").convert("RGB").save(buffer, "JPEG", quality=95)
    response = stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, image=buffer.getvalue(), top_k=4,
                                                       force_arms={"ranking": "diverse"}), timeout=10)
    assert response.arm == "ranking=diverse" and len(response.items) == 4
    assert response.items[0].id == by_name["img05.png"]


@pytest.mark.parametrize("image, message", [
    (b"definitely not an image", "preprocess:"),
    (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "preprocess:"),  # a PNG signature, then garbage
])
def test_undecodable_image_is_invalid_argument(stub, image, message):
    with pytest.raises(grpc.RpcError) as err:
        stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, image=image), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT, err.value.details()
    assert err.value.details().startswith(message) and "image" in err.value.details().lower()


def test_an_arm_naming_another_model_is_served_by_the_tower_of_the_model_that_built_the_collection(stub, t2i_stack):
    """MiniLM named for the collection the CLIP export built: the collection's model wins, as after a model
    migration (tests/serving/test_migration.py): CLIP's text tower, from the same repository, serves the arm
    and nothing is refused. A model the repository does not hold is refused (tests/serving/test_versions.py)."""
    store = t2i_stack.serving.store
    path = t2i_stack.serving_settings.experiments
    good = store.digest
    write_config(path, t2i_config(text_model="minilm"))
    try:
        eventually(lambda: store.digest != good and store.last_error == "", "the config active")
        towers = {key: tower.encoder for key, tower in store.current.served_by.items()}
        assert towers == {(SCENE, "minilm"): "tiny-clip"}, towers
        assert stub.Search(retrieval_pb2.SearchRequest(scene=SCENE, text="stripes"), timeout=10).items
    finally:
        write_config(path, t2i_config())
        eventually(lambda: store.digest == good and store.last_error == "", "the good config active again")
