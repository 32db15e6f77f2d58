"""The page-token codec and its bounds, as properties (hypothesis): a token round-trips, any altered text is
refused, and no value outside the server's own bounds is accepted, whoever signed it."""
from __future__ import annotations

import logging

import pytest
from hypothesis import given, settings, strategies as st

from mmsearch.services.serving.pipeline import pages

KEY = pages.signing_key("a configured secret")
counts = st.integers(min_value=0, max_value=2**70)
texts = st.text(max_size=40)
tokens = st.builds(pages.PageToken, offset=counts, collection=texts, arm=texts, pool=counts, query=texts, user=texts)


# Tokens serving issues are about 200 characters (identifiers and digests); arbitrary text of 40 characters per
# field can escape past the bound decode enforces (a control character is 6 in JSON, and base64 adds a third).
fitting = tokens.filter(lambda t: len(pages.encode(t, KEY)) <= pages.MAX_TOKEN_CHARS)


@given(fitting)
def test_every_token_round_trips(token):
    assert pages.decode(pages.encode(token, KEY), KEY) == token


@settings(max_examples=300)
@given(tokens, st.data())
def test_any_altered_byte_is_refused(token, data):
    text = pages.encode(token, KEY)
    at = data.draw(st.integers(0, len(text) - 1), label="position")
    replacement = data.draw(st.sampled_from("ABCabc019-_.=+/ \x00é"), label="replacement")
    altered = text[:at] + replacement + text[at + 1:]
    if altered == text:
        return
    with pytest.raises(pages.PageTokenError) as caught:
        pages.decode(altered, KEY)
    assert caught.value.code == "invalid" and "page_token" in str(caught.value)


@given(tokens, st.sampled_from(["=", "==", "===", " ", "\n", ".", "A"]), st.booleans())
def test_text_added_to_a_token_is_refused(token, extra, front):
    """Malleability: padding or anything else around a token is another text, refused (one text per token)."""
    text = pages.encode(token, KEY)
    payload, mac = text.split(".")
    for altered in ((extra + text) if front else (text + extra), f"{payload}{extra}.{mac}"):
        with pytest.raises(pages.PageTokenError):
            pages.decode(altered, KEY)


def test_appended_padding_no_longer_decodes_to_the_same_token():
    text = pages.encode(pages.PageToken(10, "docs_1", "ranking=mmr", 60, "q", "u"), KEY)
    for altered in (text + "==", text.replace(".", "==.")):
        with pytest.raises(pages.PageTokenError):
            pages.decode(altered, KEY)


def test_without_a_configured_secret_each_process_signs_with_its_own_random_key(caplog):
    with caplog.at_level(logging.WARNING):
        mine, theirs = pages.signing_key(""), pages.signing_key("")
    assert mine != theirs != pages.signing_key("") and len(mine) == 32
    assert "MMSEARCH_PAGE_TOKEN_SECRET is not set" in caplog.text
    forged = pages.encode(pages.PageToken(10, "docs_1", "ranking=mmr", 16384, "q", "u"), pages.signing_key(""))
    with pytest.raises(pages.PageTokenError):  # the empty secret is no longer a key anyone can sign with
        pages.decode(forged, mine)
    assert pages.signing_key("s") == pages.signing_key("s")  # a configured secret: the same on every replica


def test_a_long_or_non_ascii_text_is_refused_before_decoding():
    for text in ("x" * (pages.MAX_TOKEN_CHARS + 1), "é.é", "a.b.c", ""):
        with pytest.raises(pages.PageTokenError):
            pages.decode(text, KEY)


BOUNDS = {"query": "q", "user": "u", "collection": "docs_1", "arm": "a", "max_depth": 1000}


@given(offset=counts, pool=counts, pooled=st.booleans(), candidates=st.integers(1, 500),
       max_size=st.integers(1, 1000))
def test_no_value_outside_the_servers_bounds_is_accepted(offset, pool, pooled, candidates, max_size):
    """Signed or not, a token passes only with an offset under the depth and the pool a first page makes."""
    token = pages.PageToken(offset, "docs_1", "a", pool, "q", "u")
    least, most = bounds = pages.pool_bounds(pooled=pooled, candidates=candidates, max_size=max_size)
    try:
        pages.check(token, pool=bounds, **BOUNDS)
    except pages.PageTokenError as exc:
        assert exc.code == "invalid" and str(exc).startswith("page_token ")
        return
    assert offset < BOUNDS["max_depth"] and least <= pool <= most
    assert (pool == 0) if not pooled else (offset < pool <= max(candidates, max_size))


def test_a_forged_huge_pool_is_refused_naming_page_token_without_blaming_the_server():
    token = pages.PageToken(10, "docs_1", "a", 16384, "q", "u")
    with pytest.raises(pages.PageTokenError) as caught:
        pages.check(token, pool=pages.pool_bounds(pooled=True, candidates=60, max_size=100), **BOUNDS)
    message = str(caught.value)
    assert caught.value.code == "invalid" and message.startswith("page_token carries a pool of 16384")
    assert "search again without page_token" in message and "server" not in message
