"""Matchers on one Milvus Lite file in one process keep their own connections.

pymilvus keys connections by uri unless given an alias: closing one matcher (a
serving stopped in this process, as the web tests do) used to disconnect every
other matcher on that file ("should create connection first").
"""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.services.serving.backends.matcher import MilvusMatcher

pytestmark = pytest.mark.slow


async def test_closing_one_matcher_leaves_the_others_connected(stdlib_stack, stdlib_index):
    uri = str(stdlib_index.milvus_uri)
    first, second = MilvusMatcher(uri), MilvusMatcher(uri)
    vector = np.ones(384, np.float32) / np.sqrt(384)
    await first.ping(5)
    await second.ping(5)
    assert len((await first.search(stdlib_index.milvus_collection, vector, 3)).ids) == 3
    await first.close()
    await second.ping(5)
    matches = await second.search(stdlib_index.milvus_collection, vector, 3)
    assert len(matches.ids) == 3
    await second.close()
