"""Fuzzing the public entry points of a real stack with hypothesis: random query strings,
parameters, image bytes and multipart bodies against the web API, and random SearchRequests
against serving's gRPC, for a bounded number of examples each.

Asserted for every example: no 5xx from web, no UNKNOWN / INTERNAL / RESOURCE_EXHAUSTED from gRPC;
every 4xx names its parameter (web) and every INVALID_ARGUMENT names its field (gRPC); afterwards
the services still answer (web /healthz, serving SERVING, a plain search works).

The stack is ``two_scenes``: one preprocess + serving with a text scene (MiniLM) and an image scene
(tiny CLIP, image queries too), the web service in front. ``FUZZ_STATS`` counts the cases and
the clear errors; ``test_zz_report`` prints them (run with ``-s`` to see the figures).
"""
from __future__ import annotations

import collections
import io

import grpc
import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.processes import wait_serving
from tests.support.web import TIMEOUT

pytestmark = pytest.mark.slow

FUZZ = settings(max_examples=40, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
FUZZ_STATS: collections.Counter = collections.Counter()
PARAMETERS = {"scene", "q", "k", "user", "diversify", "image", "body"}
GRPC_FIELDS = ("scene", "text", "image", "top_k", "force_arms", "query", "images[")

text = st.text(st.characters(codec="utf-8"), max_size=1200)
small_text = st.text(st.characters(codec="utf-8"), max_size=80)


def png(width: int, height: int) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (30, 120, 200)).save(out, "PNG")
    return out.getvalue()


images = st.one_of(
    st.binary(max_size=2048),
    st.builds(png, st.integers(1, 64), st.integers(1, 64)),
    st.builds(lambda w, h, cut: png(w, h)[:cut], st.integers(1, 64), st.integers(1, 64), st.integers(0, 200)),
    st.builds(png, st.sampled_from([1, 2, 3]), st.sampled_from([400, 2000, 6000])),  # extreme aspect ratios
)


@pytest.fixture(scope="module")
def stack(two_scenes):
    return two_scenes


def check_http(response: requests.Response) -> None:
    FUZZ_STATS["web cases"] += 1
    assert response.status_code < 500, (response.status_code, response.text[:300])
    if response.status_code >= 400:
        error = response.json()["error"]
        parameter = error.get("parameter")
        assert isinstance(parameter, str) and (parameter in PARAMETERS or parameter.isidentifier()), error
        assert error["message"] and len(error["message"]) <= 1200, error
        FUZZ_STATS["web clear errors"] += 1


@FUZZ
@given(scene=st.one_of(st.none(), st.sampled_from(["stdlib", "t2i"]), small_text), q=st.one_of(st.none(), text),
       k=st.one_of(st.none(), small_text, st.integers(-5, 500).map(str)), user=st.one_of(st.none(), text),
       diversify=st.one_of(st.none(), small_text, st.sampled_from(["true", "0"])))
def test_fuzz_get_search(stack, scene, q, k, user, diversify):
    params = {n: v for n, v in {"scene": scene, "q": q, "k": k, "user": user, "diversify": diversify}.items()
              if v is not None}
    check_http(requests.get(stack.web.url + "/api/search", params=params, timeout=TIMEOUT))


@FUZZ
@given(scene=st.one_of(st.sampled_from(["t2i", "stdlib"]), small_text), image=images,
       extra=st.dictionaries(st.sampled_from(["k", "user", "q", "diversify", "junk"]), small_text, max_size=3))
def test_fuzz_post_image(stack, scene, image, extra):
    response = requests.post(stack.web.url + "/api/search", data={"scene": scene, **extra},
                             files={"image": ("x.bin", image, "application/octet-stream")}, timeout=TIMEOUT)
    check_http(response)


@FUZZ
@given(body=st.one_of(st.binary(max_size=4096),
                      st.lists(st.tuples(small_text, st.binary(max_size=64)), max_size=40).map(
                          lambda parts: b"".join(b"--B\r\nContent-Disposition: form-data; name=\"" +
                                                 n.encode("utf-8", "replace").replace(b'"', b"") + b"\"\r\n\r\n" + v +
                                                 b"\r\n" for n, v in parts) + b"--B--\r\n")),
       content_type=st.sampled_from(["multipart/form-data; boundary=B", "multipart/form-data",
                                     "multipart/form-data; boundary=", "multipart/form-data; boundary=" + "x" * 80]))
def test_fuzz_raw_multipart(stack, body, content_type):
    response = requests.post(stack.web.url + "/api/search", data=body, headers={"Content-Type": content_type},
                             timeout=TIMEOUT)
    check_http(response)


@FUZZ
@given(scene=st.one_of(st.sampled_from(["stdlib", "t2i"]), text), query=st.one_of(
           st.builds(lambda t: {"text": t}, text), st.builds(lambda b: {"image": b}, images), st.just({})),
       top_k=st.integers(-(2**31), 2**31 - 1), user=text,
       force=st.dictionaries(small_text, small_text, max_size=3))
def test_fuzz_grpc_search(stack, scene, query, top_k, user, force):
    request = retrieval_pb2.SearchRequest(scene=scene, top_k=top_k, user_id=user, force_arms=force, **query)
    FUZZ_STATS["grpc cases"] += 1
    with grpc.insecure_channel(stack.web.settings.serving_address) as channel:
        try:
            retrieval_pb2_grpc.RetrievalServiceStub(channel).Search(request, timeout=TIMEOUT)
            return
        except grpc.RpcError as exc:
            code, details = exc.code(), exc.details() or ""
    assert code not in (grpc.StatusCode.UNKNOWN, grpc.StatusCode.INTERNAL, grpc.StatusCode.RESOURCE_EXHAUSTED), \
        (code, details[:300])
    assert code == grpc.StatusCode.INVALID_ARGUMENT, (code, details[:300])  # every backend is up
    assert any(field in details for field in GRPC_FIELDS) and len(details) <= 1000, details[:300]
    FUZZ_STATS["grpc clear errors"] += 1


def test_zz_report(stack):
    """After the fuzzing: the services still answer; print the figures."""
    assert requests.get(stack.web.url + "/healthz", timeout=TIMEOUT).status_code == 200
    wait_serving(stack.web.settings.serving_address, 30)
    ok = requests.get(stack.web.url + "/api/search", params={"scene": stack.t2t, "q": "read a csv file"},
                      timeout=TIMEOUT)
    assert ok.status_code == 200 and ok.json()["items"], ok.text
    print(f"\nfuzz: {dict(FUZZ_STATS)}")
