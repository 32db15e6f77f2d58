"""The writer's pure checks: each item of a write accepted or refused naming its field; URLs without SSRF."""
from __future__ import annotations

import pytest

from mmsearch.core.fields import CollectionLayout, FieldSpec
from mmsearch.services.writer.fetch import FetchRefused, check_url, fetch, public_address
from mmsearch.services.writer.items import Item, Refusal, Rules, check_document, duplicates, with_image
from mmsearch.services.writer.service import numbers

LAYOUT = CollectionLayout(fields=(FieldSpec(name="category", type="keyword"), FieldSpec(name="rank", type="number")))
TEXT = Rules(LAYOUT, "{answer}", False, 1024, 4096)
IMAGES = Rules(LAYOUT, None, True, 1024, 4096)


def refusal(result) -> tuple[str, str]:
    assert isinstance(result, Refusal), result
    return result.field, result.reason


def test_a_good_text_document_becomes_its_corpus_record():
    item = check_document(0, 5, {"answer": "a", "category": "c", "rank": 2}, b"", "", TEXT)
    assert isinstance(item, Item) and item.record == {"answer": "a", "category": "c", "rank": 2, "id": 5}


@pytest.mark.parametrize("doc_id, fields, image, url, rules, field, words", [
    (None, {"answer": "a", "rank": 1}, b"", "", TEXT, "id", "missing"),
    (1, {"answer": "a", "rank": "high"}, b"", "", TEXT, "fields.rank", "number"),
    (1, {"answer": "a"}, b"", "", TEXT, "fields.rank", "missing"),
    (1, {"question": "q", "rank": 1}, b"", "", TEXT, "fields.answer", "answer"),
    (1, {"answer": "x" * 2000, "rank": 1}, b"", "", TEXT, "fields", "MMSEARCH_MAX_DOCUMENT_BYTES"),
    (1, {"answer": "a", "rank": 1, "id": 2}, b"", "", TEXT, "fields.id", "differs"),
    (1, {"answer": "a", "rank": 1}, b"img", "", TEXT, "image", "embeds text"),
    (1, {"rank": 1}, b"", "", IMAGES, "image", "missing"),
    (1, {"rank": 1}, b"x" * 5000, "", IMAGES, "image", "MMSEARCH_MAX_IMAGE_BYTES"),
    (1, {"rank": 1}, b"x", "https://example.com/a.png", IMAGES, "image", "not both"),
    (1, {"rank": 1}, b"", "file:///etc/passwd", IMAGES, "image_url", "scheme"),
    (1, {"rank": 1}, b"", "ftp://example.com/a.png", IMAGES, "image_url", "scheme"),
    (1, {"rank": 1, "url": "u"}, b"x", "", IMAGES, "fields.url", "set by the writer"),
])
def test_bad_items_are_refused_naming_the_field(doc_id, fields, image, url, rules, field, words):
    got_field, reason = refusal(check_document(3, doc_id, fields, image, url, rules))
    assert got_field == field and words in reason


def test_an_image_record_carries_the_hash_of_its_bytes_and_its_url():
    item = check_document(0, 9, {"rank": 1}, b"", "https://example.com/a.png", IMAGES)
    assert isinstance(item, Item)
    record = with_image(item, b"bytes").record
    assert record["url"] == "https://example.com/a.png" and len(record["file_sha256"]) == 64


def test_duplicates_and_numbers():
    assert duplicates([1, 2, 1, None, 2]) == {2, 4}
    assert numbers({"a": 3.0, "b": [1.5, 2.0], "c": "3"}) == {"a": 3, "b": [1.5, 2], "c": "3"}


@pytest.mark.parametrize("address, public", [("127.0.0.1", False), ("10.1.2.3", False), ("192.168.0.1", False),
                                             ("169.254.169.254", False), ("::1", False), ("fe80::1", False),
                                             ("::ffff:10.0.0.1", False), ("0.0.0.0", False), ("8.8.8.8", True),
                                             ("2001:4860:4860::8888", True)])
def test_public_addresses(address, public):
    assert public_address(address) is public


def test_urls_to_private_addresses_are_not_fetched():
    assert check_url("https://example.com:8443/a.png?x=1") == ("https", "example.com", 8443, "/a.png?x=1")
    with pytest.raises(FetchRefused, match="credentials"):
        check_url("http://user:pw@example.com/a.png")
    with pytest.raises(FetchRefused, match="private, loopback or reserved"):
        fetch("http://127.0.0.1:9/a.png", max_bytes=100, timeout=1)
    with pytest.raises(FetchRefused, match="private, loopback or reserved"):
        fetch("http://localhost/a.png", max_bytes=100, timeout=1)
