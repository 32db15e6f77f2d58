"""The Triton path and faults, end to end: each dependency stopped then restarted under a running serving.

The stack here is the cluster shape: encoder on a real ``tritonserver``
(Python backend running onnxruntime on the exported MiniLM), Milvus as a
server (the Milvus Lite engine listening on TCP), a secantusd with on-disk
storage, and the preprocess service; each can be stopped and started again on
the same port. The index is the stdlib index's vectors pushed by the real
``push-milvus``/``push-mongo``/``publish`` jobs. That serving sends text to the
preprocess service (``preprocess: service``) and caches no summary, so each
fault reaches the stage it breaks; a second serving (fixture ``inline``) on the
same stores runs the defaults (inline tokenization, summary cache) and shows
what they change: a preprocess service down does not touch its text queries,
and a page it has cached is served while the summary store is down.
"""
from __future__ import annotations

import signal
import subprocess
import time

import grpc
import pytest

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.jobs import run_job
from tests.support.loops import eventually
from tests.support.stack import MilvusServer, retrieval_stub, start_stack, stub_of, t2t_config, write_config
from tests.support.stack import search as search_scene
from mmsearch.dev.processes import free_port

pytestmark = pytest.mark.slow

SCENE = "faults"


@pytest.fixture(scope="module")
def fault_stack(stdlib_index, triton_minilm, service_loop, tmp_path_factory):
    from mmsearch.dev.mongo import start_mongo

    tmp = tmp_path_factory.mktemp("faults")
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    mongo_port = free_port()
    mongo = start_mongo(tmp / "mongo", port=mongo_port, timeout=60)
    repo = str(stdlib_index.repository)
    run_job("push-milvus", "--workdir", str(stdlib_index.workdir), "--milvus-uri", milvus.uri, "--scene", SCENE,
            "--version", "1", "--repository", repo, "--model", stdlib_index.model)
    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1")
    run_job("push-mongo", "--workdir", str(stdlib_index.workdir), "--mongo-uri", mongo.uri, "--collection", SCENE)
    experiments = tmp / "experiments.yaml"
    write_config(experiments, t2t_config(SCENE, model=stdlib_index.model, backend="triton", preprocess="service"))
    stack = start_stack(service_loop, models={stdlib_index.model: f"{repo}/{stdlib_index.model}"},
                        experiments=experiments, milvus_uri=milvus.uri, mongo_uri=mongo.uri,
                        model_repository=repo, triton_address=triton_minilm.address, summary_cache_documents=0,
                        inference_cache_queries=0)  # every search reaches the encoder and the store
    stack.extra.update(milvus=milvus, mongo=mongo, mongo_dir=tmp / "mongo", mongo_port=mongo_port, triton=triton_minilm)
    yield stack
    stack.close()
    milvus.stop()
    stack.extra["mongo"].stop()


stub = stub_of("fault_stack")


@pytest.fixture(scope="module")
def inline(fault_stack, stdlib_index, service_loop, tmp_path_factory):
    """(stack, stub) of a serving with the defaults (inline tokenization, summary cache, embedded encoder)
    on the same stores."""
    repo = str(stdlib_index.repository)
    experiments = tmp_path_factory.mktemp("inline") / "experiments.yaml"
    write_config(experiments, t2t_config(SCENE, model=stdlib_index.model))
    stack = start_stack(service_loop, models={stdlib_index.model: f"{repo}/{stdlib_index.model}"},
                        experiments=experiments, milvus_uri=fault_stack.extra["milvus"].uri,
                        mongo_uri=fault_stack.extra["mongo"].uri, model_repository=repo)
    try:
        with retrieval_stub(stack.address) as stub:
            yield stack, stub
    finally:
        stack.close()


def search(stub, text: str = "read and write CSV files"):
    return search_scene(stub, SCENE, text=text, timeout=5)


def expect_unavailable(stub, stage: str, text: str = "read and write CSV files") -> None:
    with pytest.raises(grpc.RpcError) as err:
        search(stub, text)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE, err.value.details()
    assert err.value.details().startswith(f"{stage}:"), err.value.details()


def eventually_ok(stub, timeout: float = 30.0):
    return eventually(lambda: search(stub), "a search answered", timeout=timeout, interval=0.2,
                      retry=(grpc.RpcError,))


def test_triton_path_gives_the_embedded_results(stub, stdlib_stack, stdlib_index):
    """Same exported model through Triton and in-process: the same documents."""
    via_triton = search(stub)
    with grpc.insecure_channel(stdlib_stack.address) as channel:
        embedded = retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(
            retrieval_pb2.SearchRequest(scene=stdlib_index.scene, text="read and write CSV files"), timeout=5)
    assert [i.id for i in via_triton.items] == [i.id for i in embedded.items]
    assert "csv" in [i.summary["category"] for i in via_triton.items[:3]]


# dependency -> (stop it, the stage whose failure names it); started again by _restart below
_STOPS = {
    "preprocess": (lambda stack: stack.stop_preprocess(), "preprocess"),
    "triton": (lambda stack: stack.extra["triton"].stop(), "embed"),
    "milvus": (lambda stack: stack.extra["milvus"].stop(), "match"),
    "mongo": (lambda stack: stack.extra["mongo"].stop(), "summary"),
}


@pytest.mark.parametrize("dependency", list(_STOPS))
def test_a_dependency_down_then_back(stub, fault_stack, dependency):
    stop, stage = _STOPS[dependency]
    stop(fault_stack)
    try:
        expect_unavailable(stub, stage)
    finally:
        _restart(fault_stack, dependency)
    assert eventually_ok(stub).items


# --- crashes under load: each dependency killed and restarted, again and again --------------------

RESTARTS = 5
STAGES = ("preprocess", "embed", "match", "rank", "summary", "request", "serving")


def _restart_mongo(stack) -> None:
    from mmsearch.dev.mongo import start_mongo

    stack.extra["mongo"] = start_mongo(stack.extra["mongo_dir"], port=stack.extra["mongo_port"], timeout=60)


# dependency -> (crash it, start it again on the same port and data)
_FAULTS = {
    "mongo": (lambda stack: stack.extra["mongo"].kill(), _restart_mongo),
    "milvus": (lambda stack: stack.extra["milvus"].kill(), lambda stack: stack.extra["milvus"].start()),
    "triton": (lambda stack: stack.extra["triton"].kill(), lambda stack: stack.extra["triton"].start()),
    "preprocess": (lambda stack: stack.stop_preprocess(), lambda stack: stack.start_preprocess()),
}


def _crash(stack, dependency: str) -> None:
    _FAULTS[dependency][0](stack)


def _restart(stack, dependency: str) -> None:
    _FAULTS[dependency][1](stack)


def _bad_errors(errors) -> list:
    """Errors that are not UNAVAILABLE / DEADLINE_EXCEEDED naming the stage that failed."""
    return [e for e in errors if e.code not in ("UNAVAILABLE", "DEADLINE_EXCEEDED")
            or not e.details.startswith(tuple(f"{s}: " for s in STAGES))]


@pytest.mark.parametrize("dependency", ["mongo", "milvus", "preprocess", "triton"])
def test_crash_and_restart_under_load_recovers_every_time(fault_stack, dependency):
    """kill -9 (or stop) a dependency while 8 clients search, restart it on the same port and data:
    serving answers UNAVAILABLE/DEADLINE_EXCEEDED naming the stage meanwhile, and recovers by itself
    every time (once, after the summary store restarted, serving jammed for good)."""
    from tests.support.load import SearchLoad

    request = retrieval_pb2.SearchRequest(scene=SCENE, text="read and write CSV files")
    with SearchLoad(fault_stack.address, request, concurrency=8) as load:
        load.wait_recovered(time.monotonic())
        for cycle in range(RESTARTS):
            crashed = time.monotonic()
            _crash(fault_stack, dependency)
            try:
                load.wait_failure(crashed)
            finally:
                _restart(fault_stack, dependency)
            load.wait_recovered(time.monotonic())
        errors = load.errors()
    assert errors, "the crashes were never seen by a search"
    assert _bad_errors(errors) == [], _bad_errors(errors)[:5]
    fault_stack.wait_serving(30)


def test_sigterm_stops_serving_within_its_grace_after_store_crashes(fault_stack, stdlib_index):
    """A real ``mmsearch serve serving``: the store crashes and restarts under load, crashes again,
    and SIGTERM arrives while searches wait on it: the process still exits within its grace
    period (once, after the store restarted, SIGTERM no longer stopped serving)."""
    from mmsearch.services.runtime.server import EXIT_SLACK_S
    from tests.support.load import SearchLoad
    from tests.support.processes import start_service, wait_serving

    grace = 2.0
    serving = start_service("serving", {
        "MMSEARCH_EXPERIMENTS": str(fault_stack.serving_settings.experiments),
        "MMSEARCH_PREPROCESS_ADDRESS": f"127.0.0.1:{fault_stack.preprocess_port}",
        "MMSEARCH_TRITON_ADDRESS": fault_stack.extra["triton"].address,
        "MMSEARCH_MILVUS_URI": fault_stack.extra["milvus"].uri,
        "MMSEARCH_MONGO_URI": fault_stack.extra["mongo"].uri,
        "MMSEARCH_MODEL_REPOSITORY": str(stdlib_index.repository),
        "MMSEARCH_GRACE_SECONDS": str(grace), "MMSEARCH_HEALTH_INTERVAL_SECONDS": "0.2",
        "MMSEARCH_SUMMARY_CACHE_DOCUMENTS": "0",  # every search reaches the store, as in fault_stack
        "MMSEARCH_INFERENCE_CACHE_QUERIES": "0",
    })
    try:
        wait_serving(serving.target, 60)
        request = retrieval_pb2.SearchRequest(scene=SCENE, text="read and write CSV files")
        with SearchLoad(serving.target, request, concurrency=8) as load:
            load.wait_recovered(time.monotonic())
            for _ in range(2):
                crashed = time.monotonic()
                _crash(fault_stack, "mongo")
                try:
                    load.wait_failure(crashed)
                finally:
                    _restart(fault_stack, "mongo")
                load.wait_recovered(time.monotonic())
            _crash(fault_stack, "mongo")
            load.wait_failure(time.monotonic())
            asked = time.monotonic()
            serving.proc.send_signal(signal.SIGTERM)
            try:
                code = serving.proc.wait(grace + EXIT_SLACK_S + 5)
            except subprocess.TimeoutExpired:
                pytest.fail(f"serving did not stop within {grace + EXIT_SLACK_S + 5:.0f}s of SIGTERM:\n"
                            + "\n".join(serving.lines[-20:]))
        shutdown = [line for line in serving.lines if "shutting down" in line or "close" in line or "exiting" in line]
        assert code == 0, (code, shutdown or serving.lines[-5:])
        before_sigterm = [e for e in _bad_errors(load.errors()) if e.at < asked]
        assert before_sigterm == [], before_sigterm[:5]
    finally:
        serving.stop()
        if fault_stack.extra["mongo"].process.poll() is not None:
            _restart(fault_stack, "mongo")


def health(address: str) -> int:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(address) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def test_inline_text_queries_need_no_preprocess_service(inline):
    inline_stack, inline_stub = inline
    expected = [i.id for i in search(inline_stub).items]
    inline_stack.stop_preprocess()
    try:
        inline_stack.health_rounds(2)  # the service is not a dependency of this config
        assert [i.id for i in search(inline_stub).items] == expected
        assert health(inline_stack.address) == 1  # SERVING
        assert "preprocess" not in inline_stack.serving.health.down
    finally:
        inline_stack.start_preprocess()


def test_a_cached_page_is_served_while_the_summary_store_is_down(inline, fault_stack):
    inline_stub = inline[1]
    cached = search(inline_stub)
    fault_stack.extra["mongo"].stop()
    try:
        again = search(inline_stub)
        assert [(i.id, dict(i.summary)) for i in again.items] == [(i.id, dict(i.summary)) for i in cached.items]
        expect_unavailable(inline_stub, "summary", text="open a TCP socket and listen")  # a page not cached
    finally:
        _restart(fault_stack, "mongo")
    assert eventually_ok(inline_stub).items
