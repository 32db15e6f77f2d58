"""Pure parts of the search features: typed filters -> Milvus expressions, page tokens and page plans, fusion."""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.core.fields import parse_fields
from mmsearch.v1 import retrieval_pb2
from mmsearch.services.serving.pipeline import pages
from mmsearch.services.serving.pipeline.filters import FilterError, expression, literal, read_filters
from mmsearch.services.serving.pipeline.fusion import fuse, single
from mmsearch.services.serving.backends.matcher import Matches

Filter, Value = retrieval_pb2.Filter, retrieval_pb2.FilterValue
FIELDS = {f.name: f for f in parse_fields("category:keyword,width:number,public:bool")}


def text(*values):
    return [Value(text=v) for v in values]


def compiled(*filters) -> str:
    return expression(read_filters(list(filters), FIELDS))


def test_each_operator_compiles_to_one_quoted_expression():
    assert compiled(Filter(field="category", op=Filter.EQ, values=text("json"))) == '(category == "json")'
    assert compiled(Filter(field="category", op=Filter.IN, values=text("json", "csv", "json")),
                    Filter(field="width", op=Filter.RANGE, min=100, max=800.5)) == \
        '(category in ["json", "csv"]) and (width >= 100.0 and width <= 800.5)'
    assert compiled(Filter(field="category", op=Filter.NOT, values=text("os"))) == '(category not in ["os"])'
    assert compiled(Filter(field="width", op=Filter.RANGE, max=64)) == "(width <= 64.0)"
    assert compiled(Filter(field="width", op=Filter.IN, values=[Value(number=3), Value(text="4.5")])) == \
        "(width in [3.0, 4.5])"
    assert compiled(Filter(field="public", op=Filter.EQ, values=[Value(flag=True)]),
                    Filter(field="public", op=Filter.NOT, values=text("FALSE"))) == \
        "(public == true) and (public not in [false])"
    assert compiled() == ""


def test_values_are_literals_never_expression_text():
    assert literal('x" or id > 0 or "') == '"x\\" or id > 0 or \\""'
    assert literal("back\\slash \\\" ' %_ [] ()") == '"back\\\\slash \\\\\\" \' %_ [] ()"'
    assert literal("emoji 😀 and tab\there") == '"emoji 😀 and tab\there"'


@pytest.mark.parametrize("f, words", [
    (Filter(field="colour", op=Filter.EQ, values=text("red")),
     "filters[0] (field 'colour'): the scene has no filterable field 'colour'; its fields: ['category', 'public', 'width']"),
    (Filter(field="category", op=Filter.RANGE, min=1), "RANGE does not apply to keyword field 'category'; use EQ, IN, NOT"),
    (Filter(field="public", op=Filter.IN, values=[Value(flag=True)]), "IN does not apply to bool field 'public'"),
    (Filter(field="category", op=Filter.EQ, values=[Value(number=3)]), "'category' is a keyword field; give text"),
    (Filter(field="width", op=Filter.EQ, values=text("wide")), "'width' is a number field; 'wide' is not a number"),
    (Filter(field="width", op=Filter.EQ, values=text("nan")), "finite numbers"),
    (Filter(field="public", op=Filter.EQ, values=[Value(number=1)]), "'public' is a bool field"),
    (Filter(field="category", op=Filter.EQ, values=text("a", "b")), "EQ takes exactly one value (got 2); use IN"),
    (Filter(field="category", op=Filter.IN), "IN needs one or more values"),
    (Filter(field="category", values=text("a")), "give op EQ, IN, NOT or RANGE"),
    (Filter(field="width", op=Filter.RANGE), "RANGE needs min, max or both"),
    (Filter(field="width", op=Filter.RANGE, min=5, max=1), "RANGE min 5 is above max 1"),
    (Filter(field="width", op=Filter.EQ, values=[Value(number=1)], min=0), "min and max belong to RANGE"),
    (Filter(field="category", op=Filter.EQ, values=text("two\nlines")), "line breaks"),
    (Filter(field="category", op=Filter.EQ, values=[Value()]), "a value is empty"),
])
def test_bad_filters_name_the_filter_and_field(f, words):
    with pytest.raises(FilterError) as caught:
        read_filters([f], FIELDS)
    assert words in str(caught.value)


KEY = pages.signing_key("s3cret")


def token(**kw) -> pages.PageToken:
    return pages.PageToken(**{"offset": 10, "collection": "docs_1", "arm": "ranking=control", "pool": 0,
                              "query": "abc", "user": "u", **kw})


def test_a_token_round_trips_and_a_changed_one_is_refused():
    text_ = pages.encode(token(), KEY)
    assert pages.decode(text_, KEY) == token()
    payload, mac = text_.split(".")
    for bad in (text_[:-3], "x" + text_[1:], f"{payload}.{mac[::-1]}", "", "garbage", "a.b.c"):
        with pytest.raises(pages.PageTokenError) as caught:
            pages.decode(bad, KEY)
        assert caught.value.code == "invalid" and "not a token this service issued" in str(caught.value)
    with pytest.raises(pages.PageTokenError):
        pages.decode(text_, pages.signing_key("another secret"))


def test_a_token_continues_only_its_query_index_and_arm():
    pages.check(token(), query="abc", user="u", collection="docs_1", arm="ranking=control", max_depth=100)
    cases = [({"query": "xyz"}, "invalid", "belongs to another search"),
             ({"user": "v"}, "invalid", "issued to another user: send the same user"),
             ({"collection": "docs_2"}, "stale", "the index changed since the first page (it was served by docs_1"),
             ({"arm": "ranking=mmr"}, "stale", "the experiment changed"),
             ({"max_depth": 10}, "invalid", "results stop at 10 (MMSEARCH_MAX_PAGE_DEPTH)")]
    for change, code, words in cases:
        args = {"query": "abc", "user": "u", "collection": "docs_1", "arm": "ranking=control", "max_depth": 100,
                **change}
        with pytest.raises(pages.PageTokenError) as caught:
            pages.check(token(), **args)
        assert caught.value.code == code and words in str(caught.value)


def test_page_plans():
    first = pages.plan(offset=0, size=10, pool=0, pooled=False, candidates=50, facets=False, exclude_one=False,
                       max_depth=1000)
    assert (first.fetch, first.pool) == (11, 0)  # the extra one says whether a next page exists
    third = pages.plan(offset=20, size=10, pool=0, pooled=False, candidates=50, facets=True, exclude_one=True,
                       max_depth=1000)
    assert (third.fetch, third.facet_pool) == (51, 50)
    pooled = pages.plan(offset=0, size=80, pool=0, pooled=True, candidates=50, facets=False, exclude_one=False,
                        max_depth=1000)
    assert (pooled.pool, pooled.fetch) == (80, 80)
    later = pages.plan(offset=20, size=5, pool=80, pooled=True, candidates=50, facets=False, exclude_one=False,
                       max_depth=1000)
    assert (later.pool, later.fetch) == (80, 80)  # the pool of the first page, whatever the size now
    deep = pages.plan(offset=995, size=10, pool=0, pooled=False, candidates=50, facets=False, exclude_one=False,
                      max_depth=1000)
    assert deep.size == 5


def hits(ids, scores, vectors=None, **fields):
    return Matches(np.asarray(ids, np.int64), np.asarray(scores, np.float32),
                   None if vectors is None else np.asarray(vectors, np.float32), fields)


def test_single_orders_ties_by_id_and_marks_the_retriever():
    out = single("dense", hits([9, 4, 7], [0.5, 0.9, 0.5], category=["a", "b", "c"]))
    assert out.ids.tolist() == [4, 7, 9] and out.fields["category"] == ["b", "c", "a"]
    assert out.found_by == ((("dense", 1, pytest.approx(0.9)),), (("dense", 2, 0.5),), (("dense", 3, 0.5),))


def test_rrf_sums_reciprocal_ranks():
    dense = hits([1, 2, 3], [0.9, 0.8, 0.7], [[1, 0], [0, 1], [1, 1]])
    bm25 = hits([3, 4], [7.0, 5.0], [[1, 1], [2, 2]])
    out = fuse([("dense", "IP", dense), ("bm25", "BM25", bm25)], "rrf", {"k": 60.0}, 10)
    assert out.ids.tolist() == [3, 1, 2, 4]  # 1/63 + 1/61, then 1/61, then 2 and 4 tie at 1/62: by id
    assert out.scores.tolist() == pytest.approx([1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    assert out.found_by[0] == (("dense", 3, pytest.approx(0.7)), ("bm25", 1, 7.0))
    assert out.found_by[3] == (("bm25", 2, 5.0),)
    assert out.vectors.tolist() == [[1, 1], [1, 0], [0, 1], [2, 2]]
    assert fuse([("dense", "IP", dense), ("bm25", "BM25", bm25)], "rrf", {"k": 60.0}, 2).ids.tolist() == [3, 1]


def test_weighted_fusion_normalises_each_metric():
    import math

    dense = hits([1, 2], [0.9, 0.2])
    bm25 = hits([2, 3], [8.0, 1.0])
    params = {"weights": {"dense": 0.5, "bm25": 0.5}, "norm": "atan"}
    out = fuse([("dense", "IP", dense), ("bm25", "BM25", bm25)], "weighted", params, 10)
    expect = {1: 0.5 * (0.5 + math.atan(0.9) / math.pi),
              2: 0.5 * (0.5 + math.atan(0.2) / math.pi) + 0.5 * 2 * math.atan(8.0) / math.pi,
              3: 0.5 * 2 * math.atan(1.0) / math.pi}
    assert dict(zip(out.ids.tolist(), out.scores.tolist())) == pytest.approx(expect)
    minmax = fuse([("dense", "IP", dense), ("bm25", "BM25", bm25)], "weighted",
                  {"weights": {"dense": 0.5, "bm25": 0.5}, "norm": "minmax"}, 10)
    assert dict(zip(minmax.ids.tolist(), minmax.scores.tolist())) == pytest.approx({1: 0.5, 2: 0.5, 3: 0.0})
    only = fuse([("dense", "IP", dense), ("bm25", "BM25", hits([3], [2.5]))], "weighted",
                {"weights": {"dense": 0.3, "bm25": 0.7}, "norm": "minmax"}, 10)  # the only BM25 match counts
    assert dict(zip(only.ids.tolist(), only.scores.tolist())) == pytest.approx({3: 0.7, 1: 0.3, 2: 0.0})
