"""Collapse, sort and highlights as pure functions; min_score: auto refused at load for a non-dense arm and at
activation (and on a publish) for a version without a calibrated cutoff."""
from __future__ import annotations

import pytest
import yaml

from mmsearch.core.fields import FieldSpec
from mmsearch.services.serving.config.experiments import ConfigError, parse_config
from mmsearch.services.serving.pipeline.activation import LayoutError, Needs, check_layout
from mmsearch.services.serving.pipeline.arrange import Arrangement, arrange, default_collapse, read_arrangement
from mmsearch.services.serving.pipeline.highlights import highlight, stem, term_spans, query_terms
from tests.support.stack import t2t_config

FIELDS = {"album": FieldSpec(name="album", type="keyword"), "taken": FieldSpec(name="taken", type="number"),
          "public": FieldSpec(name="public", type="bool")}
ORDER = [(0, 0.9), (1, 0.8), (2, 0.7), (3, 0.6), (4, 0.5)]
VALUES = {"album": ["a", "b", "a", "", "b"], "taken": [3.0, 1.0, 2.0, None, 1.0]}


def test_collapse_keeps_the_first_of_each_value_and_counts_the_rest():
    order, folded = arrange(ORDER, VALUES, Arrangement(collapse="album"))
    assert order == [(0, 0.9), (1, 0.8), (3, 0.6)] and folded == {0: 1, 1: 1}  # "" is never folded


def test_sort_is_stable_and_puts_missing_values_last_either_way():
    assert [p for p, _ in arrange(ORDER, VALUES, Arrangement(sort="taken"))[0]] == [1, 4, 2, 0, 3]
    assert [p for p, _ in arrange(ORDER, VALUES, Arrangement(sort="taken", descending=True))[0]] == [0, 2, 1, 4, 3]
    order, folded = arrange(ORDER, VALUES, Arrangement(sort="taken", collapse="album"))
    assert [p for p, _ in order] == [1, 0, 3] and folded == {0: 1, 1: 1}  # collapse first, then sort


@pytest.mark.parametrize("sort, collapse, words", [
    ("album", "", "sort: 'album' is a keyword field; sort takes a number field of the scene: ['taken']"),
    ("-nope", "", "sort: 'nope' is not a field of the scene"),
    ("-", "", "sort: give a field name"),
    ("", "taken", "collapse: 'taken' is a number field; collapse takes a keyword field of the scene: ['album']"),
    ("", "public", "collapse: 'public' is a bool field"),
])
def test_wrong_fields_are_refused_naming_the_parameter(sort, collapse, words):
    with pytest.raises(ValueError, match=words.replace("[", r"\[").replace("]", r"\]")):
        read_arrangement(sort, collapse, FIELDS)


def test_read_arrangement():
    assert read_arrangement("-taken", "album", FIELDS) == Arrangement("taken", True, "album")
    assert not read_arrangement("", "", FIELDS).active
    assert not read_arrangement("", "-", FIELDS).active


FRAMES = {**FIELDS, "video": FieldSpec(name="video", type="keyword"), "seconds": FieldSpec(name="seconds", type="number")}


def test_a_scene_of_video_frames_collapses_by_video_unless_the_request_says_otherwise():
    assert default_collapse(FRAMES) == "video" and read_arrangement("", "", FRAMES) == Arrangement(collapse="video")
    assert read_arrangement("-seconds", "album", FRAMES) == Arrangement("seconds", True, "album")  # named: that one
    assert read_arrangement("seconds", "-", FRAMES) == Arrangement("seconds")  # "-": every frame
    # a video field alone, or one of another type, is not the video source's mark
    assert default_collapse({**FIELDS, "video": FRAMES["video"]}) == ""
    assert default_collapse({"video": FieldSpec(name="video", type="bool"), "seconds": FRAMES["seconds"]}) == ""
    assert default_collapse(FIELDS) == "" and not read_arrangement("", "", FIELDS).active
    with pytest.raises(ValueError, match=r"collapse: 'seconds' is a number field; .* \(or '-' for no collapse\)"):
        read_arrangement("", "seconds", FRAMES)


def test_stems_and_terms():
    assert {stem(w) for w in ("file", "files", "filed", "filing")} == {"fil"}
    assert stem("classes") == stem("class") == "class"
    assert query_terms("Read the CSV files") == {"read", "csv", "fil"}  # "the" is a stop word


def test_term_spans_mark_words_and_identifier_parts():
    text = "csv.DictReader reads rows; a file of Rows."
    spans = term_spans(text, query_terms("reader rows"))
    assert [text[a:b] for a, b in spans] == ["Reader", "rows", "Rows"]


def test_code_point_offsets_past_astral_characters():
    text = "😀 parse 😀 json"
    [(field, kind, spans)] = highlight("json", {"answer": text}, lexical=True)
    assert (field, kind) == ("answer", "terms") and [text[a:b] for a, b in spans] == ["json"]


def test_a_dense_only_hit_gets_the_sentence_sharing_most_words_or_nothing():
    texts = {"question": "json.loads", "answer": "Deserialize a string. Parse a JSON document into objects! Other."}
    [(field, kind, [(a, b)])] = highlight("parse a json document", texts, lexical=False)
    assert (field, kind, texts[field][a:b]) == ("answer", "sentence", "Parse a JSON document into objects!")
    assert highlight("sqlite cursor", texts, lexical=False) == []
    assert highlight("the a of", texts, lexical=True) == []  # stop words only: nothing to mark


def scene(rank: dict, retriever: str = "dense") -> str:
    config = t2t_config("s", model="m")
    config["scenes"]["s"]["defaults"]["match"]["retriever"] = retriever
    config["scenes"]["s"]["layers"][0]["arms"][1]["overrides"] = {"rank": rank}
    return yaml.safe_dump(config)


def test_min_score_auto_loads_for_a_dense_arm_only():
    auto = {"name": "score_threshold", "params": {"min_score": "auto"}}
    arms = parse_config(scene(auto)).scenes["s"].arms
    assert [spec.auto_cutoff for spec in arms.values()] == [False, True]
    with pytest.raises(ConfigError, match="min_score: auto is calibrated on the dense score, not a hybrid arm's"):
        parse_config(scene(auto, retriever="hybrid"))
    with pytest.raises(ConfigError, match="or auto"):
        parse_config(scene({"name": "score_threshold", "params": {"min_score": "high"}}))


def test_a_version_without_a_calibrated_cutoff_cannot_serve_an_auto_arm():
    with pytest.raises(LayoutError, match="recorded none; run `mmsearch job evaluate --calibrate-precision P`"):
        check_layout("s_2", {"cutoff": {"precision": 0.9, "score": None}}, Needs(cutoff=True))
    check_layout("s_2", {"cutoff": {"precision": 0.9, "score": 0.42}}, Needs(cutoff=True))
    check_layout("s_2", {}, Needs())  # no auto arm: nothing needed
