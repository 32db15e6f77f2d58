"""T2I with filters and more like this, end to end over real sockets (tiny random CLIP, real jobs).

The corpus: the 12 distinct generated pictures in ``shapes/`` (96 px), two
near-duplicates of the red square in ``copies/`` (a 128 px copy, a noisy
copy) and a wide picture in ``wide/`` (160 x 96). ``push-milvus --fields
folder:keyword,width:number,height:number`` indexes what prepare recorded.
"""
from __future__ import annotations

import functools
import pytest

from mmsearch.dev.folders import serve_folder
from mmsearch.v1 import retrieval_pb2
from tests.support.images import IMAGE_LAYOUT, build_image_index, distinct_images, link_models, near_duplicates, \
    write_images
from tests.support.stack import start_stack, stub_of, t2i_config, write_config
from tests.support.stack import search as search_scene

pytestmark = pytest.mark.slow

SCENE = "pictures"
Filter, Value = retrieval_pb2.Filter, retrieval_pb2.FilterValue


def corpus_images() -> dict[str, object]:
    shapes = distinct_images()
    images = {f"shapes/{name}": image for name, image in shapes.items()}
    images.update({f"copies/red-square-{label}.png": im for label, im in near_duplicates(shapes["red-square.png"]).items()})
    images["wide/blue-circle-wide.png"] = shapes["blue-circle.png"].resize((160, 96))
    return images


@pytest.fixture(scope="module")
def stack(tiny_clip_repo, mongo_server, service_loop, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("t2i-features")
    folder = write_images(tmp / "images", corpus_images())
    repo = tmp / "repo"
    models = link_models(repo, tiny_clip_repo / "tiny-clip", tiny_clip_repo / "tiny-clip-image")
    with serve_folder(folder) as base_url:
        build_image_index(folder=folder, base_url=base_url, repo=repo, workdir=tmp / "work", milvus=tmp / "milvus.db",
                          mongo_uri=mongo_server, scene=SCENE, push_args=IMAGE_LAYOUT)
    config = t2i_config(SCENE, candidates=15)
    config["scenes"][SCENE]["fields"] = [{"name": "folder", "type": "keyword"}, {"name": "width", "type": "number"},
                                         {"name": "height", "type": "number"}]
    write_config(tmp / "experiments.yaml", config)
    running = start_stack(service_loop, models=models, experiments=tmp / "experiments.yaml",
                          milvus_uri=str(tmp / "milvus.db"), mongo_uri=mongo_server, model_repository=str(repo))
    yield running
    running.close()


stub = stub_of("stack")


search = functools.partial(search_scene, scene=SCENE)  # search(stub, text=..., filters=...)


def by_name(stub) -> dict[str, int]:
    return {i.summary["name"]: i.id for i in search(stub, text="a picture", top_k=20).items}


def test_more_like_this_finds_the_near_duplicates_first(stub):
    ids = by_name(stub)
    assert len(ids) == 15
    response = search(stub, similar_to=ids["shapes/red-square.png"], top_k=5)
    found = [i.summary["name"] for i in response.items]
    assert "shapes/red-square.png" not in found
    assert set(found[:2]) == {"copies/red-square-large.png", "copies/red-square-noisy.png"}, found
    diverse = search(stub, similar_to=ids["shapes/red-square.png"], top_k=5, force_arms={"ranking": "diverse"})
    assert "shapes/red-square.png" not in [i.summary["name"] for i in diverse.items]


def test_folder_and_size_filters(stub):
    copies = search(stub, text="a picture", top_k=20,
                    filters=[Filter(field="folder", op=Filter.EQ, values=[Value(text="copies")])])
    assert sorted(i.summary["name"] for i in copies.items) == ["copies/red-square-large.png",
                                                               "copies/red-square-noisy.png"]
    wide = search(stub, text="a picture", top_k=20, filters=[Filter(field="width", op=Filter.RANGE, min=120)])
    assert sorted(i.summary["name"] for i in wide.items) == ["copies/red-square-large.png", "wide/blue-circle-wide.png"]
    square_big = search(stub, text="a picture", top_k=20, filters=[
        Filter(field="width", op=Filter.RANGE, min=120), Filter(field="height", op=Filter.EQ, values=[Value(number=128)])])
    assert [i.summary["name"] for i in square_big.items] == ["copies/red-square-large.png"]
    not_shapes = search(stub, similar_to=by_name(stub)["shapes/red-square.png"], top_k=20,
                        filters=[Filter(field="folder", op=Filter.NOT, values=[Value(text="shapes")])])
    assert len(not_shapes.items) == 3 and all(not i.summary["name"].startswith("shapes/") for i in not_shapes.items)


def test_folder_facets_and_a_width_given_as_text(stub):
    response = search(stub, text="a picture", facets=["folder"],
                      filters=[Filter(field="width", op=Filter.RANGE, max=100)])
    [facet] = response.facets
    assert {c.value: c.count for c in facet.counts} == {"shapes": 12, "copies": 1}
    as_text = search(stub, text="a picture", top_k=20,
                     filters=[Filter(field="width", op=Filter.EQ, values=[Value(text="160")])])
    assert [i.summary["name"] for i in as_text.items] == ["wide/blue-circle-wide.png"]
