"""One search through web with tracing on: one trace, web -> serving -> preprocess and Triton, received over OTLP;
and every metric and label the chart's dashboard and alert rules use, in the /metrics of these processes.

Every hop is a real ``mmsearch serve`` process exporting to a real OTLP/gRPC
receiver (:mod:`tests.support.otlp`); the encoder is a real ``tritonserver``,
Milvus a server, the summaries in a real MongoDB-wire server. The serving
config tokenizes in the preprocess service, so the trace crosses every hop.
"""
from __future__ import annotations

import json

import pytest
import requests

from mmsearch.dev.processes import free_port
from tests.chart import charttools as ct
from tests.support import otlp, promql
from tests.support.jobs import run_job
from tests.support.loops import eventually
from tests.support.processes import start_service, wait_serving
from tests.support.stack import MilvusServer, t2t_config, write_config

pytestmark = pytest.mark.slow

SCENE = "traced"
SERVING_STAGES = {"preprocess", "embed", "match", "rank", "summary"}


@pytest.fixture(scope="module")
def traced(stdlib_index, triton_minilm, mongo_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("traced")
    milvus = MilvusServer(tmp / "milvus.db")
    milvus.start()
    repo, model = str(stdlib_index.repository), stdlib_index.model
    run_job("push-milvus", "--workdir", str(stdlib_index.workdir), "--milvus-uri", milvus.uri, "--scene", SCENE,
            "--version", "1", "--repository", repo, "--model", model)
    run_job("publish", "--milvus-uri", milvus.uri, "--scene", SCENE, "--version", "1")
    run_job("push-mongo", "--workdir", str(stdlib_index.workdir), "--mongo-uri", mongo_server, "--collection", SCENE)
    experiments = tmp / "experiments.yaml"
    write_config(experiments, t2t_config(SCENE, model=model, backend="triton", preprocess="service"))
    processes = []
    with otlp.OtlpReceiver() as receiver:
        try:
            preprocess = start_service("preprocess", {"MMSEARCH_MODELS": json.dumps({model: f"{repo}/{model}"}),
                                                      "OTEL_SERVICE_NAME": "preprocess", **otlp.env(receiver)})
            processes.append(preprocess)
            serving = start_service("serving", {
                "MMSEARCH_EXPERIMENTS": str(experiments), "MMSEARCH_PREPROCESS_ADDRESS": preprocess.target,
                "MMSEARCH_TRITON_ADDRESS": triton_minilm.address, "MMSEARCH_MILVUS_URI": milvus.uri,
                "MMSEARCH_MONGO_URI": mongo_server, "MMSEARCH_MODEL_REPOSITORY": repo,
                "MMSEARCH_HEALTH_INTERVAL_SECONDS": "0.2",
                "OTEL_SERVICE_NAME": "serving", **otlp.env(receiver)})
            processes.append(serving)
            wait_serving(serving.target, 60)
            web = start_service("web", {"MMSEARCH_SERVING_ADDRESS": serving.target, "OTEL_SERVICE_NAME": "web",
                                        **otlp.env(receiver)})
            processes.append(web)
            yield receiver, f"http://127.0.0.1:{web.port}", {"preprocess": preprocess, "serving": serving, "web": web}
        finally:
            for process in reversed(processes):
                process.stop()
            milvus.stop()


SERVER = 2  # opentelemetry.proto.trace.v1.Span.SPAN_KIND_SERVER


def _trace(receiver: otlp.OtlpReceiver, trace_id: str, services: set[str]) -> list[otlp.Span]:
    """The trace's spans once every service has sent its server span (each one's last to end; a service
    exports in batches, so its inner spans may come before it)."""
    def complete():
        spans = [s for s in receiver.spans() if s.trace_id == trace_id]
        return spans if services <= {s.service for s in spans if s.kind == SERVER} else None
    return eventually(complete, f"the spans of trace {trace_id} from {sorted(services)}", timeout=30)


def test_one_search_is_one_trace_across_every_hop(traced):
    receiver, url, _ = traced
    parent = "00-" + "ab" * 16 + "-" + "cd" * 8 + "-01"  # a caller's own trace: web continues it
    response = requests.get(f"{url}/api/search", params={"scene": SCENE, "q": "read and write CSV files"},
                            headers={"traceparent": parent}, timeout=30)
    assert response.status_code == 200, response.text
    spans = _trace(receiver, "ab" * 16, {"web", "serving", "preprocess"})
    by_id = {s.span_id: s for s in spans}

    def one(service: str, name: str) -> otlp.Span:
        found = [s for s in spans if s.service == service and s.name == name]
        assert len(found) == 1, (service, name, [(s.service, s.name) for s in spans])
        return found[0]

    root = one("web", "GET /api/search")
    assert root.parent_id == "cd" * 8 and root.attributes["http.response.status_code"] == 200
    client = one("web", "mmsearch.v1.RetrievalService/Search")
    assert client.parent_id == root.span_id
    server = one("serving", "mmsearch.v1.RetrievalService/Search")
    assert server.parent_id == client.span_id
    stages = {s.name: s for s in spans if s.service == "serving" and s.parent_id == server.span_id
              and s.attributes.get("mmsearch.stage")}
    assert set(stages) == SERVING_STAGES
    tokenize = one("serving", "mmsearch.v1.PreprocessService/Tokenize")
    assert tokenize.parent_id == stages["preprocess"].span_id
    assert one("preprocess", "mmsearch.v1.PreprocessService/Tokenize").parent_id == tokenize.span_id
    milvus, mongo = one("serving", "milvus search"), one("serving", "mongodb find")
    assert milvus.parent_id == stages["match"].span_id and mongo.parent_id == stages["summary"].span_id
    assert milvus.attributes["db.system"] == "milvus" and mongo.attributes["db.collection.name"] == SCENE
    # The stages run one after another inside the server span, and add up to no more than the request's time.
    ordered = sorted(stages.values(), key=lambda s: s.start_ns)
    assert all(a.end_ns <= b.start_ns for a, b in zip(ordered, ordered[1:]))
    assert server.start_ns <= ordered[0].start_ns and ordered[-1].end_ns <= server.end_ns
    assert sum(s.ms for s in ordered) <= server.ms <= root.ms
    assert all(s.parent_id in by_id for s in spans if s is not root)
    timings = {t["stage"]: t["ms"] for t in response.json().get("timings", [])}
    if timings:  # the response's own stage timings are the spans' (within the clock's jitter)
        assert set(timings) == SERVING_STAGES


def test_the_trace_id_is_in_the_log_lines_and_the_error_body(traced):
    receiver, url, processes = traced
    response = requests.get(f"{url}/api/similar", params={"scene": SCENE, "id": "987654321"}, timeout=30)
    assert response.status_code == 404, response.text
    error = response.json()["error"]
    assert len(error["trace_id"]) == 32 and error["request_id"]
    lines = eventually(lambda: [r for r in processes["serving"].logs if r.get("trace_id") == error["trace_id"]],
                       "serving's log line of the failed search")
    assert any(r["message"].startswith("search failed: NOT_FOUND") and r["code"] == "NOT_FOUND" for r in lines)
    assert all(len(r["span_id"]) == 16 for r in lines)
    spans = _trace(receiver, error["trace_id"], {"web", "serving"})
    failed = [s for s in spans if s.service == "serving" and s.name.endswith("/Search")]
    assert failed and failed[0].attributes["rpc.grpc.status_code"] == "NOT_FOUND"
    assert [s.attributes["error.type"] for s in spans if s.name == "fetch"] == ["NOT_FOUND"]


def test_every_metric_and_label_of_the_dashboard_and_alerts_is_exposed(traced):
    _, url, processes = traced
    for _ in range(2):  # the second one is served from the summary cache
        assert requests.get(f"{url}/api/search", params={"scene": SCENE, "q": "parse JSON"}, timeout=30).ok
    pages = {name: requests.get(f"http://127.0.0.1:{p.metrics_port}/metrics", timeout=10).text
             for name, p in processes.items()}
    exposed: dict[str, set[str]] = {}
    for text in pages.values():
        for sample, labels in promql.exposed(text).items():
            exposed.setdefault(sample, set()).update(labels)
    missing = []
    for where, expr in promql.expressions(ct.manifests("observability")).items():
        for metric, labels in promql.uses(expr).items():
            if metric not in exposed:
                missing.append(f"{where}: {metric}")
            elif labels - exposed[metric]:
                missing.append(f"{where}: {metric} has no label {sorted(labels - exposed[metric])}")
    assert not missing, missing
