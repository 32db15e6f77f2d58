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
        real = session.run_with_iobinding  # the encoder binds its output buffer (a float32 tower of fixed width)
        session.run_with_iobinding = lambda *a, _real=real, _s=session: ran.append(_s) or _real(*a)
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


async def test_a_query_batched_with_one_at_the_token_cap_gets_the_vector_it_gets_alone(minilm_repo):
    import asyncio

    from mmsearch.services.serving.backends.batching import MicroBatcher, pad_and_stack

    folder = ModelRepository(minilm_repo).folder("minilm")
    tokenizer = load_tokenizer(minilm_repo / "minilm")
    encoder = OnnxEncoder(folder, intra_op_threads=1)
    shapes = []

    async def run(inputs):
        shapes.append(inputs["input_ids"].shape)
        return await encoder.infer(inputs)

    batcher = MicroBatcher(run, max_size=32)

    def query(text):
        ids, mask = tokenizer.encode_one(text)
        return {"input_ids": ids, "attention_mask": mask}

    short, long = query(TEXTS[1]), query("parse a very long document " * 200)
    cap = long["input_ids"].shape[1]
    assert cap >= 128 and short["input_ids"].shape[1] < 16
    try:
        alone = await batcher.submit(short)
        # the first call goes at once; the long query and the short one queue behind it and are taken together
        together = await asyncio.gather(batcher.submit(query(TEXTS[0])), batcher.submit(long), batcher.submit(short))
        padded = await encoder.infer(pad_and_stack([short, long])[0])  # and were it padded to the cap, the same
    finally:
        await batcher.close()
        await encoder.close()
    assert np.allclose(alone[0], together[2][0], atol=1e-5) and np.allclose(alone[0], padded[0], atol=1e-5)
    assert together[1].shape == (1, 384)
    assert (1, cap) in shapes and all(s[1] < cap for s in shapes if s != (1, cap))  # nothing padded to the cap


async def test_the_bound_output_buffer_holds_what_a_plain_run_returns(minilm_repo):
    folder = ModelRepository(minilm_repo).folder("minilm")
    encoder = OnnxEncoder(folder, intra_op_threads=1)
    try:
        ids, mask = load_tokenizer(minilm_repo / "minilm").encode(TEXTS[:3])
        first = await encoder.infer({"input_ids": ids, "attention_mask": mask})
        again = await encoder.infer({"input_ids": ids[:1], "attention_mask": mask[:1]})
        plain = encoder._session.run(None, {"input_ids": ids, "attention_mask": mask})[0]
        assert encoder._width == 384 and first.shape == (3, 384) and np.allclose(first, plain, atol=1e-6)
        assert np.allclose(again[0], plain[0], atol=1e-5)  # a fresh buffer per call: the earlier result is intact
        assert np.allclose(first, plain, atol=1e-6)
    finally:
        await encoder.close()


async def test_cpu_seconds_are_counted_for_calls_on_the_encoders_threads_not_for_a_lone_call_on_the_loop(minilm_repo):
    from mmsearch.services.serving import metrics

    busy = {"others": 0}
    encoder = OnnxEncoder(ModelRepository(minilm_repo).folder("minilm"), intra_op_threads=1, single_query_threads=0,
                          alone=lambda: busy["others"] == 0, lone_on_loop=True)
    counted = metrics.ENCODER_CPU.labels("minilm")
    try:
        ids, mask = load_tokenizer(minilm_repo / "minilm").encode(TEXTS * 8)
        before = counted._value.get()
        await encoder.infer({"input_ids": ids[:1], "attention_mask": mask[:1]})  # alone: on the event loop
        assert counted._value.get() == before
        await encoder.infer({"input_ids": ids, "attention_mask": mask})  # 24 queries: on the encoder's thread
        assert counted._value.get() > before
    finally:
        await encoder.close()
