"""A model migration while serving (real jobs, real serving, one model repository with two exports).

Version ``minilm`` of a stdlib scene is built by the real all-MiniLM-L6-v2, version ``tiny`` by a tiny
random DistilBERT tower (another export, other dimension); the experiment config names MiniLM. Under a
bounded concurrent load, a publish of ``tiny`` makes serving load and warm the tiny tower and follow the
alias (the arm now encodes with it), the rollback returns to MiniLM, and no request fails on the way.
The tiny tower's tokenizer was loaded when its version was registered, before the publish.
The MiniLM tower the publish left stays loaded (the spare), so the rollback creates no encoder; the tiny
one it left is then the spare, released once a publish of another MiniLM version moves on. A version
whose model the repository does not hold is refused (the old one keeps serving). The p99 latency before
and across each switch is printed (run with ``-s``); it is a figure, not a threshold.
"""
from __future__ import annotations

import shutil

import pytest

from tests.support.indexes import build_version, lifecycle_servers, prepare_stdlib, serve_versions, write_corpus
from tests.support.jobs import run_job
from tests.support.load import SearchLoad, text_requests
from tests.support.loops import eventually

pytestmark = pytest.mark.slow
SCENE = "migrating"
MODULES = "json,csv,random,shutil,base64,uuid,hashlib,gzip"
QUERIES = ["parse a JSON document", "write rows to a CSV file", "copy a directory tree", "random choice from a list",
           "encode bytes as base64", "make a unique identifier", "compute a SHA-256 digest", "compress with gzip"]
TINY = "tiny-multilingual"


@pytest.fixture(scope="module")
def migration(tmp_path_factory, minilm_repo, tiny_multilingual_repo, service_loop):
    tmp = tmp_path_factory.mktemp("migration")
    repository = tmp / "models"  # both exports in the one repository serving reads
    shutil.copytree(minilm_repo / "minilm", repository / "minilm")
    shutil.copytree(tiny_multilingual_repo / TINY, repository / TINY)
    orphan = tmp / "orphan-models"  # an export serving's repository does not hold
    shutil.copytree(tiny_multilingual_repo / TINY, orphan / "orphan")
    (orphan / "orphan" / "manifest.json").write_text(
        (orphan / "orphan" / "manifest.json").read_text().replace(f'"{TINY}"', '"orphan"'))
    with lifecycle_servers(tmp) as (milvus, mongo):
        records = prepare_stdlib(tmp / "minilm", MODULES)
        write_corpus(tmp / "tiny", records)
        write_corpus(tmp / "orphan", records)
        build_version(tmp / "minilm", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=repository,
                      scene=SCENE, version="minilm")
        build_version(tmp / "minilm", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=repository,
                      scene=SCENE, version="minilm2", encode=False)  # the same vectors: a move within MiniLM
        build_version(tmp / "tiny", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=repository,
                      scene=SCENE, version="tiny", model=TINY)
        build_version(tmp / "orphan", milvus_uri=milvus.uri, mongo_uri=mongo.uri, repository=orphan,
                      scene=SCENE, version="orphan", model="orphan")
        run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "minilm", "--keep", "3")
        stack = serve_versions(service_loop, tmp, SCENE, repository, milvus.uri, mongo.uri)
        yield {"milvus": milvus, "stack": stack}
        stack.close()


def switch(load: SearchLoad, stack, command: list[str], target: str) -> dict[str, float]:
    load.wait_for(load.mark() + 100)
    start = load.mark()
    run_job(*command)
    stack.wait_route(SCENE, target, timeout=60)
    during = load.mark()
    load.wait_for(during + 50)
    return {"before": load.p99_ms(load.phase(start - 100, start)), "during": load.p99_ms(load.phase(start, during)),
            "after": load.p99_ms(load.phase(during, load.mark())), "during_n": during - start}


def test_serving_follows_a_publish_to_another_model_and_back_with_no_failed_request(migration):
    milvus, stack = migration["milvus"].uri, migration["stack"]
    serving = stack.serving
    publish = ["publish", "--milvus-uri", milvus, "--scene", SCENE, "--keep", "3"]  # the orphan version is newest
    shadows = serving.routes.shadows  # the tiny tower's tokenizer is loaded when its version is registered
    eventually(lambda: TINY in shadows.prepared, "the tiny model's tokenizer prepared before any publish", timeout=30)
    assert "orphan" not in shadows.prepared and TINY in stack.loop.call(serving.backends.inline.models(1.0))
    with SearchLoad(stack.address, text_requests(SCENE, QUERIES), concurrency=4) as load:
        forward = switch(load, stack, [*publish, "--version", "tiny"], f"{SCENE}_tiny")
        active = serving.store.current
        tower = active.served_by[(SCENE, "minilm")]
        assert (tower.encoder, tower.preprocess) == (TINY, TINY)
        assert ("embedded", TINY) in active.encoders and ("embedded", "minilm") not in active.encoders
        mark = load.mark()
        load.wait_for(mark + 20)
        assert all(len(s.ids) == 5 for s in load.phase(mark)), "searches on the tiny version find items"
        pool, releases = serving.backends.encoders, serving.routes.releases
        assert ("embedded", "minilm") in pool.keys() and ("embedded", "minilm") not in releases.released
        created = pool.created
        back = switch(load, stack, [*publish, "--rollback"], f"{SCENE}_minilm")
        assert dict(serving.store.current.served_by) == {}
        assert ("embedded", "minilm") in serving.store.current.encoders
        assert pool.created == created, "the rollback found the MiniLM tower loaded: no encoder created"
        assert releases.spare == {("embedded", TINY)} and ("embedded", TINY) in pool.keys()
        switch(load, stack, [*publish, "--version", "minilm2"], f"{SCENE}_minilm2")
        assert releases.spare == frozenset() and pool.created == created
    assert load.failures == []
    eventually(lambda: ("embedded", TINY) in releases.released, "the tiny encoder released once the publish of "
               "minilm2 moved on", timeout=30, interval=0.1)
    assert ("embedded", TINY) not in pool.keys() and ("embedded", "minilm") not in releases.released
    run_job(*publish, "--rollback")  # back to the first MiniLM version, for the next test
    stack.wait_route(SCENE, f"{SCENE}_minilm", timeout=60)
    for name, p99 in (("publish to the tiny model", forward), ("rollback to MiniLM", back)):
        print(f"\np99 ms across the {name}: before {p99['before']:.1f}, during {p99['during']:.1f} "
              f"({p99['during_n']} requests), after {p99['after']:.1f}")


def test_a_version_built_by_a_model_the_repository_lacks_is_refused(migration, caplog):
    milvus, stack = migration["milvus"].uri, migration["stack"]
    run_job("publish", "--milvus-uri", milvus, "--scene", SCENE, "--version", "orphan", "--keep", "3")
    try:
        with caplog.at_level("ERROR", logger="mmsearch.services.serving.pipeline.routes"):
            eventually(lambda: any("not following" in r.message and "'orphan'" in r.message and "does not hold"
                                   in r.message for r in caplog.records), "the refusal logged", timeout=30)
        stack.route_rounds(2)
        assert stack.serving.store.current.routes[SCENE] == f"{SCENE}_minilm"
    finally:
        run_job("publish", "--milvus-uri", milvus, "--scene", SCENE, "--version", "minilm", "--keep", "3")
