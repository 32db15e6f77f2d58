"""Serving's inline tokenizer (``preprocess: inline``) gives exactly the ids the preprocess service gives.

On the parity set (1,000 varied texts: scripts, emoji, whitespace, texts past the max length), for the
real MiniLM WordPiece tokenizer and a CLIP-style BPE one: the inline ids and mask equal the service's
answer for the text alone, and its row of a batched Tokenize cut to its own tokens (what serving's
service path feeds the encoder).
"""
from __future__ import annotations

import numpy as np
import pytest

from mmsearch.core.codec import from_tensor
from mmsearch.core.model_repository import ModelFolder
from mmsearch.v1 import preprocess_pb2
from mmsearch.services.serving.errors import Mismatch
from mmsearch.services.serving.backends.inline import InlinePreprocessor
from mmsearch.services.serving.backends.preprocessor import token_rows
from tests.preprocess.samples import varied_texts

BATCH = 50


@pytest.mark.parametrize("model", ["minilm", "tiny-clip"])
async def test_inline_ids_equal_the_services_on_the_parity_set(stub, model_repo, model):
    inline = InlinePreprocessor(lambda name: ModelFolder(model_repo / name))
    await inline.prepare(model)
    texts = varied_texts(1000)
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        response = await stub.Tokenize(preprocess_pb2.TokenizeRequest(model=model, texts=batch))
        rows = token_rows(from_tensor(response.input_ids), from_tensor(response.attention_mask), len(batch))
        for offset, (text, row) in enumerate(zip(batch, rows)):
            mine = await inline.text(model, text, timeout=1.0)
            where = f"{model} text {start + offset}"
            assert mine["input_ids"].dtype == np.int64 and mine["attention_mask"].dtype == np.int64
            np.testing.assert_array_equal(mine["input_ids"], row["input_ids"], err_msg=where)
            np.testing.assert_array_equal(mine["attention_mask"], row["attention_mask"], err_msg=where)
        alone = await stub.Tokenize(preprocess_pb2.TokenizeRequest(model=model, texts=[batch[0]]))
        np.testing.assert_array_equal((await inline.text(model, batch[0], 1.0))["input_ids"],
                                      from_tensor(alone.input_ids))


async def test_a_folder_without_a_tokenizer_is_refused_naming_the_model(model_repo):
    inline = InlinePreprocessor(lambda name: ModelFolder(model_repo / name))
    with pytest.raises(Mismatch, match="inline tokenizer of model 'tiny-clip-image': .* has no tokenizer.json"):
        await inline.prepare("tiny-clip-image")
    with pytest.raises(Mismatch, match="image queries go to the preprocess service"):
        await inline.image("tiny-clip-image", b"\x89PNG", 1.0)
    assert await inline.models(1.0) == set()
