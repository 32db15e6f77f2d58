"""The embedded encoder's two sessions (one query alone vs merged batches) agree."""
import numpy as np

from mmsearch.core.tokenizers import load_tokenizer
from mmsearch.core.model_repository import ModelRepository
from mmsearch.services.serving.backends.encoders import OnnxEncoder

TEXTS = ["read and write CSV files", "parse a JSON document into Python objects", "join two paths"]


async def test_single_query_session_matches_the_batched_session(minilm_repo):
    encoder = OnnxEncoder(ModelRepository(minilm_repo).folder("minilm"), intra_op_threads=1, single_query_threads=0)
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
    encoder = OnnxEncoder(ModelRepository(minilm_repo).folder("minilm"), intra_op_threads=1, single_query_threads=1)
    assert encoder._single is encoder._session


async def test_a_lone_query_uses_the_single_query_session_only_while_nothing_else_runs(minilm_repo):
    busy = {"others": 0}
    encoder = OnnxEncoder(ModelRepository(minilm_repo).folder("minilm"), intra_op_threads=1, single_query_threads=0,
                          alone=lambda: busy["others"] == 0)
    ran = []
    for session in (encoder._session, encoder._single):
        real = session.run
        session.run = lambda *a, _real=real, _s=session: ran.append(_s) or _real(*a)
    try:
        ids, mask = load_tokenizer(minilm_repo / "minilm").encode(TEXTS[:1])
        await encoder.infer({"input_ids": ids, "attention_mask": mask})
        busy["others"] = 3
        await encoder.infer({"input_ids": ids, "attention_mask": mask})
        assert ran == [encoder._single, encoder._session]
    finally:
        await encoder.close()


async def test_a_lone_query_runs_on_the_calling_thread_when_asked_and_gives_the_same_vector(minilm_repo):
    import threading

    busy = {"others": 0}
    folder = ModelRepository(minilm_repo).folder("minilm")
    encoder = OnnxEncoder(folder, intra_op_threads=1, single_query_threads=0, alone=lambda: busy["others"] == 0,
                          lone_on_loop=True)
    threads = []
    real = encoder._run
    encoder._run = lambda inputs: threads.append(threading.current_thread().name) or real(inputs)
    try:
        ids, mask = load_tokenizer(minilm_repo / "minilm").encode(TEXTS[:1])
        on_loop = await encoder.infer({"input_ids": ids, "attention_mask": mask})
        busy["others"] = 2
        on_thread = await encoder.infer({"input_ids": ids, "attention_mask": mask})
        assert threads[0] == threading.current_thread().name and threads[1].startswith("onnx-minilm")
        assert np.allclose(on_loop, on_thread, atol=1e-5)
    finally:
        await encoder.close()
