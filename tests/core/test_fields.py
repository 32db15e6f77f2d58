"""Field declarations (pure): parsing --fields, typed values from corpus records, the BM25 text, records."""
from __future__ import annotations

import pytest

from mmsearch.core.fields import CollectionLayout, FieldError, FieldSpec, LexicalSpec, identifier_words, parse_fields, \
    parse_lexical
from mmsearch.core.milvus.record import CollectionRecord


def test_compact_and_json_declarations_mean_the_same():
    compact = parse_fields("category:keyword, width:number:meta_width,flag:bool")
    as_json = parse_fields('[{"name": "category", "type": "keyword"}, {"name": "width", "type": "number", '
                           '"source": "meta_width"}, {"name": "flag", "type": "bool"}]')
    assert compact == as_json
    assert [(f.name, f.type, f.key) for f in compact] == [("category", "keyword", "category"),
                                                           ("width", "number", "meta_width"), ("flag", "bool", "flag")]
    assert compact[1].operators == ("eq", "in", "not", "range") and compact[2].operators == ("eq", "not")
    assert parse_fields("") == () and parse_lexical("") is None


@pytest.mark.parametrize("text, words", [
    ("category", "expected name:type"),
    ("category:text", "type"),
    ("vector:keyword", "reserved"),
    ("1st:keyword", "letters, digits and _"),
    ("a:keyword,a:number", None),
    ("[oops", "not JSON"),
])
def test_bad_declarations_name_the_entry(text, words):
    with pytest.raises((FieldError, ValueError)) as caught:
        CollectionLayout(fields=parse_fields(text))
    assert words is None or words in str(caught.value)
    if text.startswith("a:"):
        assert "declared twice" in str(caught.value)


def test_values_are_typed_and_bad_ones_name_the_record():
    keyword, number, flag = parse_fields("category:keyword,width:number,ok:bool")
    record = {"id": 7, "category": 3, "width": 640, "ok": False}
    assert (keyword.value(record), number.value(record), flag.value(record)) == ("3", 640.0, False)
    assert keyword.value({"id": 7}) == ""  # no nulls in Milvus Lite: a missing keyword is empty
    for bad, words in [({"id": 7}, "record 7: field 'width' (corpus key 'width') is missing"),
                       ({"id": 7, "width": "wide"}, "'wide' is not a finite number"),
                       ({"id": 7, "width": float("nan")}, "not a finite number"),
                       ({"id": 7, "width": True}, "not a finite number")]:
        with pytest.raises(FieldError, match=words.replace("(", r"\(").replace(")", r"\)")):
            number.value(bad)
    with pytest.raises(FieldError, match="'yes' is not true or false"):
        flag.value({"id": 7, "ok": "yes"})
    with pytest.raises(FieldError, match="at most 1024"):
        keyword.value({"id": 7, "category": "x" * 2000})


def test_bm25_text_adds_the_words_of_identifiers():
    assert identifier_words("csv.DictReader reads rows") == "csv Dict Reader"
    assert identifier_words("use get_close_matches or HTTPServer") == "get close matches HTTP Server"
    assert identifier_words("plain words only") == ""
    spec = LexicalSpec(sources=("question", "answer"))
    text = spec.text({"question": "os.path.join", "answer": "Join two or more pathname components.", "x": 1})
    assert text == "os.path.join os path join\nJoin two or more pathname components."
    assert len(spec.text({"question": "é" * 40000}).encode()) <= 65535


def test_records_without_a_layout_still_read():
    old = '{"mmsearch":{"scene":"s","version":"1","created_at":1.0,"index":{},"manifest":{"name":"m"}}}'
    record = CollectionRecord.from_description(old)
    assert record is not None and record.layout == CollectionLayout() and record.layout.empty
    layout = CollectionLayout(fields=parse_fields("category:keyword"), lexical=parse_lexical("question,answer"))
    new = CollectionRecord.new({"name": "m"}, "s", "2", {}, layout)
    again = CollectionRecord.from_description(new.to_description())
    assert again.layout == layout and again.layout.field("category") == FieldSpec(name="category", type="keyword")
    assert again.layout.record() == {"fields": [{"name": "category", "type": "keyword"}],
                                     "lexical": {"sources": ["question", "answer"], "analyzer": "english"}}
