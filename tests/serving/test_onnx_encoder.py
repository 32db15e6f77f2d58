"""The embedded encoder's two sessions (one query alone vs merged batches) agree."""
import numpy as np

from services.preprocess.tokenizers import load_tokenizer
from services.serving.encoders import OnnxEncoder

TEXTS = ["read and write CSV files", "parse a JSON document into Python objects", "join two paths"]


async def test_single_query_session_matches_the_batched_session(minilm_repo):
    encoder = OnnxEncoder(str(minilm_repo), "minilm", intra_op_threads=1, single_query_threads=0)
    try:
        assert encoder._single is not encoder._session
        ids, mask = load_tokenizer(minilm_repo / "minilm").encode(TEXTS)
        batched = await encoder.infer({"input_ids": ids, "attention_mask": mask})
        for row, text in enumerate(TEXTS):
            one_ids, one_mask = load_tokenizer(minilm_repo / "minilm").encode([text])
            alone = await encoder.infer({"input_ids": one_ids, "attention_mask": one_mask})
            assert alone.shape == (1, 384)
            assert np.allclose(alone[0], batched[row], atol=1e-5)
    finally:
        await encoder.close()


def test_equal_thread_settings_keep_one_session(minilm_repo):
    encoder = OnnxEncoder(str(minilm_repo), "minilm", intra_op_threads=1, single_query_threads=1)
    assert encoder._single is encoder._session
