"""mmsearch.client against the real serving stack: searches, filters, facets, pages, feedback, scenes,
API keys, mutual TLS, errors carrying the server's message and field, retries; and its pure parts."""
from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import threading

import grpc
import pytest

from mmsearch.client import (AsyncClient, Client, InvalidArgument, NotFound, PageExpired, PermissionDenied,
                             RateLimited, Retry, SceneInfo, Tls, Unauthenticated, Unavailable, field)
from mmsearch.client.calls import search_request
from mmsearch.client.errors import blamed_field, error_of
from mmsearch.client.transport import Attempts
from mmsearch.dev.processes import free_port
from mmsearch.v1 import retrieval_pb2
from tests.client.examples import examples
from tests.fixtures.servers import STDLIB_INDEX_TEXT_FIELD

QUERY, EXPECTED = "write rows to a csv file", "csv.writer"


@pytest.fixture(scope="module")
def client(search_stack):
    with Client(search_stack, timeout=20) as client:
        yield client


def test_text_search_returns_ranked_hits_with_summaries(client, stdlib_index):
    page = client.search(stdlib_index.scene, QUERY, top_k=5, user_id="alice")
    assert 1 <= len(page.hits) <= 5
    assert EXPECTED in [hit.summary.get("question") for hit in page.hits]
    assert [h.score for h in page.hits] == sorted((h.score for h in page.hits), reverse=True)
    assert page.arm and page.assignments and {"embed", "match"} <= set(page.timings)
    assert page.collection and page.feedback_token and page.impression_id
    assert all(isinstance(hit.id, int) and hit.found_by for hit in page.hits)


def test_scenes_report_the_filterable_fields(client, stdlib_index):
    (scene,) = [s for s in client.scenes() if s.name == stdlib_index.scene]
    assert scene.modality == "text" and not scene.image_query and scene.documents == stdlib_index.documents
    assert scene.fields["category"].type == "keyword" and scene.fields["category"].facet
    assert (scene.collapse, scene.note) == ("", "")  # not of video frames; no note in its config
    assert scene.text_fields == (STDLIB_INDEX_TEXT_FIELD,)  # what a live write of a document must carry
    assert client.scene(stdlib_index.scene) == scene
    with pytest.raises(NotFound, match="no scene 'nope'") as caught:
        client.scene("nope")
    assert caught.value.field == "scene"


def test_typed_filters_and_facets(client, stdlib_index):
    category = client.scene(stdlib_index.scene).field("category")
    page = client.search(stdlib_index.scene, "parse a document", top_k=10, filters=[category.eq("json")],
                         facets=["category"])
    assert page.hits and {h.summary["category"] for h in page.hits} == {"json"}
    assert page.facets["category"].counts[0][0] == "json"
    others = client.search(stdlib_index.scene, "parse a document", top_k=10,
                           filters=[field("category").none_of("json", "csv")])
    assert others.hits and not {h.summary["category"] for h in others.hits} & {"json", "csv"}
    with pytest.raises(InvalidArgument, match="takes eq, in, not, not range") as caught:
        category.between(1, 2)
    assert caught.value.field == "category"
    with pytest.raises(InvalidArgument, match="takes str values") as caught:
        category.eq(3)
    with pytest.raises(InvalidArgument, match="has no filterable field 'width'"):
        client.scene(stdlib_index.scene).field("width")


def test_three_pages_follow_each_other(client, stdlib_index):
    pages = list(itertools.islice(client.pages(stdlib_index.scene, QUERY, page_size=3), 3))
    assert [p.offset for p in pages] == [0, 3, 6]
    ids = [hit.id for page in pages for hit in page.hits]
    assert len(ids) == 9 == len(set(ids))
    first = client.search(stdlib_index.scene, QUERY, page_size=9)
    assert [hit.id for hit in first.hits] == ids


def test_similar_and_its_unknown_id(client, stdlib_index):
    top = client.search(stdlib_index.scene, QUERY, top_k=1).hits[0]
    like = client.similar(stdlib_index.scene, top.id, top_k=5)
    assert like.hits and top.id not in [h.id for h in like.hits]
    with pytest.raises(NotFound, match="no item with id 12345") as caught:
        client.similar(stdlib_index.scene, 12345)
    assert caught.value.field == "similar_to" and caught.value.code == "NOT_FOUND"


def test_feedback_is_counted_once(client, stdlib_index):
    page = client.search(stdlib_index.scene, QUERY, top_k=3, user_id="dora")
    first = client.feedback(page.feedback_token, page.hits[0].id, "click")
    assert first.impression_id == page.impression_id and not first.duplicate
    assert client.feedback(page.feedback_token, page.hits[0].id, "click").duplicate
    with pytest.raises(InvalidArgument, match="was not on the page") as caught:
        client.feedback(page.feedback_token, 12345, "skip")
    assert caught.value.field == "item_id"
    forged = page.feedback_token[:-4] + ("AAAA" if not page.feedback_token.endswith("AAAA") else "BBBB")
    with pytest.raises(PermissionDenied, match="signature does not match"):
        client.feedback(forged, page.hits[0].id, "click")


@pytest.mark.parametrize("options, field_name, words", [
    ({"top_k": 500}, "top_k", "top_k 500 is out of range"),
    ({"page_size": 101}, "page_size", "page_size 101 is out of range"),
    ({"filters": [field("nope").eq("x")]}, "filters[0]", "no filterable field 'nope'"),
    ({"facets": ["nope"]}, "facets", "is not a field of the scene"),
    ({"page_token": "garbage"}, "page_token", "page_token"),
    ({"force_arms": {"nope": "x"}}, "force_arms", "unknown layer(s) 'nope'"),
])
def test_server_refusals_carry_its_message_and_field(client, stdlib_index, options, field_name, words):
    with pytest.raises(InvalidArgument) as caught:
        client.search(stdlib_index.scene, QUERY, **options)
    assert words in caught.value.message and caught.value.message.startswith("request: ")
    assert caught.value.field == field_name and caught.value.code == "INVALID_ARGUMENT"


def test_collapse_highlights_and_a_refused_sort(client, stdlib_index):
    page = client.search(stdlib_index.scene, QUERY, page_size=8, collapse="category", highlight=True)
    categories = [hit.summary["category"] for hit in page.hits]
    assert len(categories) == len(set(categories)) and sum(hit.folded for hit in page.hits) > 0
    marked = [h for hit in page.hits for h in hit.highlights]
    assert marked and all(h.kind == "sentence" and h.spans for h in marked)  # the dense arm: a sentence each
    assert page.cutoff is None
    with pytest.raises(InvalidArgument) as caught:
        client.search(stdlib_index.scene, QUERY, sort="-category")
    assert caught.value.field == "sort" and "'category' is a keyword field" in caught.value.message


def test_text_too_long_and_unknown_scene(client, stdlib_index):
    with pytest.raises(InvalidArgument, match="text has 1001 characters") as caught:
        client.search(stdlib_index.scene, "x" * 1001)
    assert caught.value.field == "text"
    with pytest.raises(InvalidArgument, match="unknown scene") as caught:
        client.search("nope", QUERY)
    assert caught.value.field == "scene"
    with pytest.raises(InvalidArgument, match="does not accept image queries") as caught:
        client.search(stdlib_index.scene, image=b"\x89PNG")
    assert caught.value.field == "image"


@pytest.mark.parametrize("args, options, field_name", [
    ((), {}, "query"),
    (("q",), {"similar_to": 3}, "query"),
    ((b"q",), {}, "text"),
    (("q",), {"top_k": "5"}, "top_k"),
    (("q",), {"top_k": -1}, "top_k"),
    (("q",), {"filters": ["category:json"]}, "filters[0]"),
    ((), {"image": "cat.jpg"}, "image"),
])
def test_the_client_refuses_what_it_can_see_before_calling(args, options, field_name):
    with pytest.raises(InvalidArgument) as caught:
        search_request("t2t", *args, **options)
    assert caught.value.field == field_name, caught.value


def test_client_arguments_are_checked_when_made():
    for kwargs, name in (({"timeout": 0}, "timeout"), ({"api_key": "has space"}, "api_key"), ({"tls": "yes"}, "tls"),
                         ({"tls": Tls(ca_file="/nonexistent/ca.crt")}, "tls"),
                         ({"tls": Tls(cert_file="tls.crt")}, "tls"), ({"retry": 3}, "retry")):
        with pytest.raises(InvalidArgument) as caught:
            Client("127.0.0.1:1", **kwargs)
        assert caught.value.field == name
    with pytest.raises(InvalidArgument, match="event must be one of"):
        Client("127.0.0.1:1").feedback("v1.x", 1, "like")


async def test_async_client_searches_pages_and_feedback(search_stack, stdlib_index):
    async with AsyncClient(search_stack, timeout=20) as client:
        pages = await asyncio.gather(*(client.search(stdlib_index.scene, q, top_k=3)
                                       for q in (QUERY, "parse json", "open a socket")))
        assert all(p.hits for p in pages)
        offsets = []
        async for page in client.pages(stdlib_index.scene, QUERY, page_size=2):
            offsets.append(page.offset)
            if len(offsets) == 3:
                break
        assert offsets == [0, 2, 4]
        recorded = await client.feedback(pages[0].feedback_token, pages[0].hits[0].id, "dwell", dwell_seconds=3.0)
        assert recorded.impression_id == pages[0].impression_id
        assert [s.name for s in await client.scenes()] == [stdlib_index.scene]
        with pytest.raises(InvalidArgument, match="top_k 500") as caught:
            await client.search(stdlib_index.scene, QUERY, top_k=500)
        assert caught.value.field == "top_k"


def test_api_keys_scopes_and_rates(keyed_stack):
    scene = keyed_stack.scene
    with Client(keyed_stack.addresses, timeout=20) as anonymous:
        with pytest.raises(Unauthenticated, match="an API key is required"):
            anonymous.search(scene, QUERY)
    with Client(keyed_stack.addresses, api_key=keyed_stack.keys["full"], timeout=20) as full:
        page = full.search(scene, QUERY, top_k=3)
        assert page.hits and not full.feedback(page.feedback_token, page.hits[0].id, "click").duplicate
    with Client(keyed_stack.addresses, api_key=keyed_stack.keys["search"], timeout=20) as search_only:
        with pytest.raises(PermissionDenied, match="lacks the scope 'feedback'"):
            search_only.feedback(page.feedback_token, page.hits[0].id, "skip")
    with Client(keyed_stack.address, api_key=keyed_stack.keys["slow"], timeout=20) as slow:
        with pytest.raises(RateLimited) as caught:
            for _ in range(4):
                slow.scenes()
        assert caught.value.retry_after and caught.value.retry_after >= 1


@pytest.mark.slow
def test_mutual_tls(tmp_path, stdlib_index, service_loop):
    from tests.fixtures.stack import STDLIB_FIELDS
    from tests.support.certs import Ca, write_pair
    from tests.support.stack import start_stack, t2t_config, write_config

    ca = Ca.make("client test CA")
    serving, caller = write_pair(tmp_path / "serving", ca.leaf("serving")), write_pair(tmp_path / "me", ca.leaf("me"))
    experiments = tmp_path / "experiments.yaml"
    write_config(experiments, t2t_config(stdlib_index.scene, model=stdlib_index.model, fields=STDLIB_FIELDS))
    repo = str(stdlib_index.repository)
    stack = start_stack(service_loop, models={stdlib_index.model: f"{repo}/{stdlib_index.model}"},
                        experiments=experiments, milvus_uri=str(stdlib_index.milvus_uri),
                        mongo_uri=stdlib_index.mongo_uri, model_repository=repo,
                        tls=serving.settings(client_auth=True))
    try:
        tls = Tls(ca_file=caller.ca, cert_file=caller.cert, key_file=caller.key)
        with Client(f"localhost:{stack.serving.port}", tls=tls, timeout=20) as client:
            assert client.search(stdlib_index.scene, QUERY, top_k=2).hits
        no_certificate = Client(f"localhost:{stack.serving.port}", tls=Tls(ca_file=caller.ca), timeout=2,
                                retry=Retry(attempts=1))
        with no_certificate, pytest.raises(Unavailable):
            no_certificate.search(stdlib_index.scene, QUERY)
    finally:
        stack.close()


def test_unavailable_is_retried_until_the_deadline(search_stack, stdlib_index):
    """Nothing listens: UNAVAILABLE on every try, the retries stop within the deadline and raise it."""
    with Client(f"127.0.0.1:{free_port()}", timeout=1.5, retry=Retry(attempts=50, max_s=0.2)) as client:
        with pytest.raises(Unavailable) as caught:
            client.search(stdlib_index.scene, QUERY)
    assert caught.value.code == "UNAVAILABLE"


def _rpc_error(code: grpc.StatusCode, details: str, trailing=()) -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), grpc.aio.Metadata(*trailing), details)


def test_attempts_retry_unavailable_of_idempotent_calls_only():
    now = [0.0]
    clock = lambda: now[0]  # noqa: E731
    down = _rpc_error(grpc.StatusCode.UNAVAILABLE, "search: preprocess is unavailable")
    attempts = Attempts(Retry(attempts=3, initial_s=0.1, max_s=1.0), 10.0, True, clock=clock, draw=lambda: 1.0)
    assert attempts.remaining() == 10.0
    assert attempts.wait_after(down) == pytest.approx(0.1)
    now[0] = 1.0
    assert attempts.wait_after(down) == pytest.approx(0.2) and attempts.remaining() == 9.0
    with pytest.raises(Unavailable, match="preprocess is unavailable"):
        attempts.wait_after(down)  # the third try was the last
    once = Attempts(Retry(), 10.0, False, clock=clock)
    with pytest.raises(Unavailable):
        once.wait_after(down)
    refused = Attempts(Retry(), 10.0, True, clock=clock)
    with pytest.raises(InvalidArgument):
        refused.wait_after(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "request: top_k 500 is out of range"))
    late = Attempts(Retry(initial_s=2.0, max_s=2.0), 1.0, True, clock=clock, draw=lambda: 1.0)
    with pytest.raises(Unavailable):
        late.wait_after(down)  # a wait past the deadline is not taken
    assert Retry(initial_s=0.1, max_s=0.5).wait(10, 0.0) == pytest.approx(0.25)


def test_error_of_maps_statuses_fields_and_retry_after():
    stale = error_of(_rpc_error(grpc.StatusCode.FAILED_PRECONDITION, "request: page_token is of index version x"))
    assert isinstance(stale, PageExpired) and stale.field == "page_token"
    limited = error_of(_rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "key 3f is over its rate",
                                  (("retry-after", "3"),)))
    assert isinstance(limited, RateLimited) and limited.retry_after == 3.0 and limited.field is None
    assert str(error_of(_rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "request: text is empty"))) == \
        "INVALID_ARGUMENT [text]: request: text is empty"
    assert blamed_field("feedback: dwell_seconds 0 is out of range") == "dwell_seconds"
    assert blamed_field("request: scene 't2t' does not accept image queries") == "image"
    assert blamed_field("match: unexpected ValueError from the backend") is None


def test_filters_keep_their_types_on_the_wire():
    request = search_request("s", "q", filters=[field("width").between(800, None), field("animated").eq(False),
                                                field("tag").any_of("a", "b")])
    width, animated, tag = request.filters
    assert width.op == retrieval_pb2.Filter.RANGE and width.min == 800 and not width.HasField("max")
    assert animated.values[0].WhichOneof("kind") == "flag" and tag.op == retrieval_pb2.Filter.IN
    assert [v.text for v in tag.values] == ["a", "b"]
    assert search_request("s", "q", filters=field("tag").eq("a")).filters[0].field == "tag"  # one filter, unlisted


def test_scene_info_carries_the_collapse_and_the_note():
    info = SceneInfo.of(retrieval_pb2.Scene(name="clips", modality="image", collapse="video", note="Random CLIP"))
    assert (info.collapse, info.note, info.text_fields) == ("video", "Random CLIP", ())
    assert SceneInfo.of(retrieval_pb2.Scene(name="t2t", modality="text", text_fields=["question", "answer"])
                        ).text_fields == ("question", "answer")


def test_documented_examples_run_against_the_stack(search_stack, stdlib_index):
    env = {**os.environ, "MMSEARCH_ADDRESS": search_stack, "MMSEARCH_SCENE": stdlib_index.scene}
    for name, code in examples().items():
        if name == "image":
            continue  # needs an image scene: tests/client/test_installed.py runs it
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, f"example {name}:\n{done.stdout}\n{done.stderr}"
