"""The one redaction of credentials in URIs (and in messages that quote them)."""
from __future__ import annotations

import pytest

from mmsearch.core.redact import redact


@pytest.mark.parametrize("text, expected", [
    ("mongodb://user:s3cret@host:27017/db", "mongodb://user:***@host:27017/db"),
    ("http://root:secret@milvus:19530", "http://root:***@milvus:19530"),
    ("mongodb://u:p@ss@h1:1,h2:2/db?authSource=admin", "mongodb://u:***@h1:1,h2:2/db?authSource=admin"),
    ("https://apikey@milvus.example:443", "https://***@milvus.example:443"),
    ("s3://bucket/key?token=abc&x=1", "s3://bucket/key?token=***&x=1"),
    ("Milvus at http://root:pw@h:1 failed; retry mongodb://a:b@c", "Milvus at http://root:***@h:1 failed; retry mongodb://a:***@c"),
    ("http://milvus:19530", "http://milvus:19530"),
    ("./data/milvus.db", "./data/milvus.db"),
    ("user@example.com wrote", "user@example.com wrote"),
])
def test_redact(text, expected):
    assert redact(text) == expected
