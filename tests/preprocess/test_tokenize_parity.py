"""The service's tokenization equals transformers' AutoTokenizer(texts, padding=True, truncation=True)."""
from __future__ import annotations

import numpy as np
import pytest
from transformers import AutoTokenizer

from mmsearch.v1 import preprocess_pb2, tensor_pb2
from mmsearch.core.codec import from_tensor
from mmsearch.core.tokenizers import load_tokenizer
from tests.preprocess.samples import varied_texts

BATCH = 50


@pytest.mark.parametrize("model, max_length", [("minilm", 512), ("tiny-clip", 77)])
async def test_thousand_varied_texts_match_autotokenizer(stub, model_repo, model, max_length):
    reference = AutoTokenizer.from_pretrained(model_repo / model)
    texts = varied_texts(1000)
    truncated = 0
    for start in range(0, len(texts), BATCH):
        batch = texts[start:start + BATCH]
        response = await stub.Tokenize(preprocess_pb2.TokenizeRequest(model=model, texts=batch))
        ids, mask = from_tensor(response.input_ids), from_tensor(response.attention_mask)
        expected = reference(batch, padding=True, truncation=True, return_tensors="np")
        assert ids.dtype == np.int64 and mask.dtype == np.int64
        np.testing.assert_array_equal(ids, expected["input_ids"], err_msg=f"input_ids, batch at {start}")
        np.testing.assert_array_equal(mask, expected["attention_mask"], err_msg=f"attention_mask, batch at {start}")
        truncated += int((mask.sum(axis=1) == max_length).sum())
    assert truncated >= 100, "the sample must exercise truncation to the max length"


async def test_single_query_is_not_padded_to_a_fixed_length(stub):
    """all-MiniLM-L6-v2's tokenizer.json pads to 128; a query must come back at its own length."""
    response = await stub.Tokenize(preprocess_pb2.TokenizeRequest(model="minilm", texts=["hello world"]))
    assert list(response.input_ids.shape) == [1, 4]
    np.testing.assert_array_equal(from_tensor(response.input_ids), [[101, 7592, 2088, 102]])


async def test_int32_output(stub):
    response = await stub.Tokenize(preprocess_pb2.TokenizeRequest(
        model="tiny-clip", texts=["a cat", "a photo of a dog"], dtype=tensor_pb2.DTYPE_INT32))
    ids = from_tensor(response.input_ids)
    assert ids.dtype == np.int32 and response.input_ids.dtype == tensor_pb2.DTYPE_INT32
    assert ids.shape == from_tensor(response.attention_mask).shape


def test_loaded_tokenizer_reads_hugging_face_settings(model_repo):
    minilm = load_tokenizer(model_repo / "minilm")
    clip = load_tokenizer(model_repo / "tiny-clip")
    assert (minilm.max_length, minilm.pad_token, minilm.pad_id) == (512, "[PAD]", 0)
    assert (clip.max_length, clip.pad_token) == (77, "<|endoftext|>")


def test_max_length_falls_back_to_the_manifest(tmp_path, model_repo):
    """Without a real model_max_length (transformers' 'very large' sentinel) the export manifest bounds it."""
    import json
    import shutil

    folder = shutil.copytree(model_repo / "minilm", tmp_path / "minilm")
    config = json.loads((folder / "tokenizer_config.json").read_text())
    config["model_max_length"] = int(1e30)
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    assert load_tokenizer(folder).max_length == 128  # tokenizer.json's own truncation
    (folder / "manifest.json").write_text(json.dumps({"max_length": 256}))
    tokenizer = load_tokenizer(folder)
    ids, mask = tokenizer.encode(["word " * 400, "short"])
    assert tokenizer.max_length == 256 and ids.shape == (2, 256) and mask[1].sum() == 3
