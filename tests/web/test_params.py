"""Parameter validation and JSON shapes of the web API (pure functions)."""
import grpc
import pytest
from google.protobuf import struct_pb2

from mmsearch.v1 import retrieval_pb2
import json

from mmsearch.services.web.params import BadParameter, TooLarge, parse_feedback, parse_search
from mmsearch.services.web.responses import blamed_parameter, http_status, scenes_json, search_json

LIMITS = {"max_top_k": 50, "max_query_chars": 20, "max_user_chars": 128}


def test_text_search_defaults():
    q = parse_search({"scene": "t2t", "q": "  json parsing "}, **LIMITS)
    assert (q.scene, q.text, q.image, q.top_k, q.user_id, q.diversify) == ("t2t", "json parsing", None, 0, "", False)


def test_all_parameters():
    q = parse_search({"scene": "t2i", "q": "a dog", "k": "7", "user": "u-1", "diversify": "true"}, **LIMITS)
    assert (q.top_k, q.user_id, q.diversify) == (7, "u-1", True)


@pytest.mark.parametrize(
    "params, parameter, words",
    [
        ({"q": "x"}, "scene", "required"),
        ({"scene": "", "q": "x"}, "scene", "required"),
        ({"scene": "t2t/../x", "q": "x"}, "scene", "not a scene name"),
        ({"scene": "t2t"}, "q", "required"),
        ({"scene": "t2t", "q": "   "}, "q", "required"),
        ({"scene": "t2t", "q": "x" * 21}, "q", "at most 20"),
        ({"scene": "t2t", "q": "x", "k": "ten"}, "k", "integer"),
        ({"scene": "t2t", "q": "x", "k": "0"}, "k", "between 1 and 50"),
        ({"scene": "t2t", "q": "x", "k": "51"}, "k", "between 1 and 50"),
        ({"scene": "t2t", "q": "x", "user": "u" * 129}, "user", "at most 128"),
        ({"scene": "t2t", "q": "x", "diversify": "maybe"}, "diversify", "true or false"),
    ],
)
def test_bad_parameters_name_the_parameter(params, parameter, words):
    with pytest.raises(BadParameter) as err:
        parse_search(params, **LIMITS)
    assert err.value.parameter == parameter
    assert words in err.value.message


def test_image_query_rules():
    q = parse_search({"scene": "t2i"}, image=b"\x89PNG...", max_image_bytes=100, **LIMITS)
    assert q.image == b"\x89PNG..." and q.text is None
    with pytest.raises(BadParameter) as err:
        parse_search({"scene": "t2i"}, image=b"", max_image_bytes=100, **LIMITS)
    assert err.value.parameter == "image"
    with pytest.raises(TooLarge):
        parse_search({"scene": "t2i"}, image=b"x" * 101, max_image_bytes=100, **LIMITS)
    with pytest.raises(BadParameter) as err:
        parse_search({"scene": "t2i", "q": "dog"}, image=b"x", max_image_bytes=100, **LIMITS)
    assert err.value.parameter == "q" and "not both" in err.value.message


def test_status_mapping():
    assert http_status(grpc.StatusCode.INVALID_ARGUMENT) == (400, "invalid_argument")
    assert http_status(grpc.StatusCode.UNAVAILABLE) == (503, "unavailable")
    assert http_status(grpc.StatusCode.DEADLINE_EXCEEDED) == (504, "deadline_exceeded")
    assert http_status(grpc.StatusCode.NOT_FOUND)[0] == 404
    assert http_status(grpc.StatusCode.INTERNAL) == (502, "upstream_error")


def test_search_json_mirrors_the_proto():
    summary = struct_pb2.Struct()
    summary.update({"question": "json.loads", "answer": "Deserialize", "category": "json", "n": 3})
    response = retrieval_pb2.SearchResponse(
        items=[retrieval_pb2.Item(id=7, score=0.5, retrieval_score=0.25, summary=summary),
               retrieval_pb2.Item(id=8, score=0.25, retrieval_score=0.125)],
        arm="ranking=control",
        assignments=[retrieval_pb2.ArmAssignment(layer="ranking", arm="control")],
        timings=[retrieval_pb2.StageTiming(stage="embed", ms=1.5)],
        missing_summaries=1,
    )
    body = search_json(response, scene="t2t", elapsed_ms=3.0)
    assert body["items"][0] == {"id": 7, "score": 0.5, "retrieval_score": 0.25,
                                "summary": {"question": "json.loads", "answer": "Deserialize",
                                            "category": "json", "n": 3}, "found_by": [], "folded": 0,
                                "highlights": []}
    assert body["items"][1]["summary"] == {}
    assert body["assignments"] == [{"layer": "ranking", "arm": "control"}]
    assert body["timings"] == [{"stage": "embed", "ms": 1.5}]
    assert (body["arm"], body["missing_summaries"], body["scene"], body["elapsed_ms"]) == ("ranking=control", 1, "t2t", 3.0)


def test_scenes_json():
    response = retrieval_pb2.ListScenesResponse(
        scenes=[retrieval_pb2.Scene(name="t2i", modality="image", image_query=True, layers=["ranking"]),
                retrieval_pb2.Scene(name="clips", modality="image", collapse="video", note="Random CLIP"),
                retrieval_pb2.Scene(name="t2t", modality="text", text_fields=["question", "answer"])])
    assert scenes_json(response) == {
        "scenes": [{"name": "t2i", "modality": "image", "image_query": True, "layers": ["ranking"], "fields": [],
                    "collapse": "", "note": "", "text_fields": []},
                   {"name": "clips", "modality": "image", "image_query": False, "layers": [], "fields": [],
                    "collapse": "video", "note": "Random CLIP", "text_fields": []},
                   {"name": "t2t", "modality": "text", "image_query": False, "layers": [], "fields": [],
                    "collapse": "", "note": "", "text_fields": ["question", "answer"]}]}


@pytest.mark.parametrize(
    "details, parameter",
    [
        ("request: unknown scene 'nope'; scenes are ['t2t']", "scene"),
        ("request: text has 1200 characters; at most 1000", "q"),
        ("request: scene 't2t' does not accept image queries", "image"),
        ("request: image has 9 bytes; at most 8", "image"),
        ("request: top_k 500 is out of range", "k"),
        ("request: filters[0] (field 'colour'): the scene has no filterable field 'colour'", "filter"),
        ("request: facets: 'width' is a number field", "facet"),
        ("request: page_token: the index changed since the first page", "page_token"),
        ("fetch: no item with id 5 in collection 'stdlib_1'", "id"),
        ("preprocess: cannot decode the image", None),
        ("something else entirely", None),
    ],
)
def test_blamed_parameter(details, parameter):
    assert blamed_parameter(details) == parameter


def test_filters_facets_pages_and_similar():
    from multidict import MultiDict

    from mmsearch.services.web.client import search_request
    from mmsearch.services.web.params import FilterParam

    params = MultiDict([("scene", "t2t"), ("q", "read"), ("filter", "category:json"), ("filter", "category:csv"),
                        ("filter", "category!:os"), ("filter", "width:800.."), ("filter", "name:a:b"),
                        ("filter", "height:..10.5"), ("facet", "category"), ("facet", "category"),
                        ("page_token", "abc.DEF-_")])
    q = parse_search(params, **LIMITS)
    assert q.filters == (FilterParam("category", "in", ("json", "csv")), FilterParam("name", "eq", ("a:b",)),
                         FilterParam("category", "not", ("os",)), FilterParam("width", "range", low=800.0),
                         FilterParam("height", "range", high=10.5))
    assert q.facets == ("category",) and q.page_token == "abc.DEF-_"
    request = search_request(q)
    assert request.text == "read" and list(request.facets) == ["category"] and request.page_token == "abc.DEF-_"
    assert [(f.field, f.op, [v.text for v in f.values]) for f in request.filters][:3] == [
        ("category", retrieval_pb2.Filter.IN, ["json", "csv"]), ("name", retrieval_pb2.Filter.EQ, ["a:b"]),
        ("category", retrieval_pb2.Filter.NOT, ["os"])]
    width = request.filters[3]
    assert width.op == retrieval_pb2.Filter.RANGE and width.HasField("min") and not width.HasField("max")
    similar = parse_search({"scene": "t2t", "id": "42", "k": "5"}, similar=True, **LIMITS)
    assert similar.similar_to == 42 and similar.text is None
    assert search_request(similar).WhichOneof("query") == "similar_to"


@pytest.mark.parametrize("params, similar, parameter, words", [
    ({"scene": "t2t", "q": "x", "filter": "category"}, False, "filter", "write FIELD:VALUE"),
    ({"scene": "t2t", "q": "x", "filter": "bad field:x"}, False, "filter", "write FIELD:VALUE"),
    ({"scene": "t2t", "q": "x", "facet": "a b"}, False, "facet", "not a field name"),
    ({"scene": "t2t", "q": "x", "page_token": "not a token!"}, False, "page_token", "not a token"),
    ({"scene": "t2t"}, True, "id", "id is required"),
    ({"scene": "t2t", "id": "abc"}, True, "id", "must be an integer between 0 and"),
    ({"scene": "t2t", "id": "-1"}, True, "id", "must be between 0 and"),
    ({"scene": "t2t", "id": "1", "q": "x"}, True, "q", "searches by id"),
])
def test_bad_filter_facet_token_and_id_parameters(params, similar, parameter, words):
    with pytest.raises(BadParameter) as err:
        parse_search(params, similar=similar, **LIMITS)
    assert err.value.parameter == parameter and words in err.value.message


@pytest.mark.parametrize("field, value", [
    ("item_id", "\u00b2"), ("item_id", "\u0661\u0662"), ("item_id", "12\n"), ("item_id", " 12"), ("item_id", "+12"),
    ("item_id", True), ("item_id", 2.0), ("item_id", [1]), ("item_id", 2**63),
    ("event", ["click"]), ("event", {"click": 1}), ("event", 1), ("event", None),
    ("dwell_seconds", 10**400), ("dwell_seconds", True), ("dwell_seconds", "3"), ("dwell_seconds", [3]),
])
def test_feedback_fields_of_the_wrong_type_are_refused_naming_the_field(field, value):
    """str.isdigit() took "\u00b2" (int() then failed) and an unhashable event raised: both once 500s."""
    body = {"feedback_token": "t", "item_id": 7, "event": "dwell", "dwell_seconds": 2.5, field: value}
    with pytest.raises(BadParameter) as refused:
        parse_feedback(json.dumps(body).encode(), 100)
    assert refused.value.parameter == field


def test_feedback_ids_may_be_decimal_strings():
    event = parse_feedback(b'{"feedback_token": "t", "item_id": "9223372036854775807", "event": "click"}', 100)
    assert event.item_id == 2**63 - 1 and event.dwell_seconds == 0.0


def test_sort_collapse_and_highlight_parameters():
    q = parse_search({"scene": "t2t", "q": "files", "sort": "-length", "collapse": "category", "highlight": "1"},
                     **LIMITS)
    assert (q.sort, q.collapse, q.highlight) == ("-length", "category", True)
    assert parse_search({"scene": "t2t", "q": "files", "sort": "length"}, **LIMITS).sort == "length"
    plain = parse_search({"scene": "t2t", "q": "files"}, **LIMITS)
    assert (plain.sort, plain.collapse, plain.highlight) == ("", "", False)
    assert parse_search({"scene": "t2t", "q": "files", "collapse": "-"}, **LIMITS).collapse == "-"  # none at all
    for params, parameter in (({"sort": "--x"}, "sort"), ({"sort": "a b"}, "sort"), ({"collapse": "-x"}, "collapse"),
                              ({"highlight": "maybe"}, "highlight")):
        with pytest.raises(BadParameter) as caught:
            parse_search({"scene": "t2t", "q": "files", **params}, **LIMITS)
        assert caught.value.parameter == parameter
    assert blamed_parameter("request: sort: 'category' is a keyword field; ...") == "sort"
    assert blamed_parameter("request: collapse: 'n' is a number field; ...") == "collapse"


def test_search_json_carries_folded_highlights_and_the_cutoff():
    item = retrieval_pb2.Item(id=7, score=0.5, folded=3, highlights=[retrieval_pb2.Highlight(
        field="answer", kind="terms", spans=[retrieval_pb2.Span(start=0, end=4)])])
    body = search_json(retrieval_pb2.SearchResponse(items=[item], cutoff=0.25), scene="t2t", elapsed_ms=1.0)
    assert body["items"][0]["folded"] == 3 and body["cutoff"] == 0.25
    assert body["items"][0]["highlights"] == [{"field": "answer", "kind": "terms", "spans": [[0, 4]]}]
    assert search_json(retrieval_pb2.SearchResponse(), scene="t2t", elapsed_ms=1.0)["cutoff"] is None
