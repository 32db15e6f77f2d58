"""The text template a text corpus embeds: its fields, rendering, what records and flags ask for."""
from __future__ import annotations

import pytest

from mmsearch.core.text_template import (
    MissingField, TemplateError, choose_template, embedded_template, field_template, recorded_template, render,
    template_fields,
)


def test_fields_in_order_each_once_and_literal_braces():
    assert template_fields("{question}: {answer} ({question})") == ("question", "answer")
    assert render("{{{name}}} {count}", {"name": "csv", "count": 3}) == "{csv} 3"
    assert render("{title-en}", {"title-en": "x"}) == "x"
    assert render(field_template("answer"), {"answer": "Join paths.", "question": "os.path.join"}) == "Join paths."


@pytest.mark.parametrize("value", [None, True, ["a"], {"a": 1}])
def test_a_field_without_text_is_named(value):
    with pytest.raises(MissingField, match="no text in field 'answer', which the text template '{q} {answer}'") as caught:
        render("{q} {answer}", {"q": "x", "answer": value})
    assert caught.value.field == "answer"
    with pytest.raises(MissingField, match="field 'answer'"):
        render("{answer}", {})


def test_the_flags_and_what_a_record_holds():
    assert choose_template("answer", None) == "{answer}"
    assert choose_template(None, "{question}: {answer}") == "{question}: {answer}"
    assert choose_template(None, None) is None
    with pytest.raises(TemplateError, match="--text-field 'a' and --text-template '{b}': give one"):
        choose_template("a", "{b}")
    assert recorded_template({"text_template": "{a} {b}", "text_field": "c"}) == "{a} {b}"
    assert recorded_template({"text_field": "answer"}) == "{answer}"  # recorded before templates
    assert recorded_template({"text_field": None}) is None and recorded_template({}) is None


@pytest.mark.parametrize("template, message", [
    ("", "empty"), ("  ", "empty"), ("plain", "names no field"), ("{{literal}}", "names no field"),
    ("{}", "a positional field {}"), ("{1}", "a positional field {1}"), ("{a.b}", "{a.b} is not a plain field"),
    ("{a[0]}", "{a[0]} is not a plain field"), ("{a:>9}", "{a:>9} is not a plain field"),
    ("{a!s}", "{a!s} is not a plain field"), ("{a", "expected '}' before end of string"),
    ("a}", "Single '}' encountered"),
])
def test_a_template_that_cannot_be_used_is_refused_naming_why(template, message):
    with pytest.raises(TemplateError, match=message.replace("{", r"\{").replace("[", r"\[")):
        template_fields(template)


def test_the_embedded_template_is_the_recorded_one_else_the_default_fields():
    assert embedded_template({"text_template": "{question}: {answer}"}) == "{question}: {answer}"
    assert embedded_template({"text_field": "answer"}) == "{answer}"
    assert embedded_template({}) == "{question}"
