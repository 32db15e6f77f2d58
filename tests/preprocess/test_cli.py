"""``mmsearch serve preprocess`` as a real process, called by a real gRPC client."""
from __future__ import annotations

import json
import os
import subprocess

import grpc
import numpy as np

from mmsearch.v1 import preprocess_pb2, preprocess_pb2_grpc
from mmsearch.core.channels import message_options
from mmsearch.core.codec import from_tensor
from tests.support.processes import MMSEARCH, start_service, wait_serving
from tests.preprocess.samples import encoded


def test_serve_preprocess_process(registry):
    models = {name: registry[name] for name in ("minilm", "tiny-clip", "tiny-clip-image")}
    service = start_service("preprocess", {"MMSEARCH_MODELS": json.dumps(models)})
    try:
        wait_serving(service.target)
        options = message_options()
        with grpc.insecure_channel(service.target, options=options) as channel:
            stub = preprocess_pb2_grpc.PreprocessServiceStub(channel)
            tokens = stub.Tokenize(preprocess_pb2.TokenizeRequest(model="minilm", texts=["hello world", "hi"]))
            np.testing.assert_array_equal(from_tensor(tokens.input_ids), [[101, 7592, 2088, 102], [101, 7632, 102, 0]])
            pixels = stub.PreprocessImages(preprocess_pb2.PreprocessImagesRequest(
                model="tiny-clip-image", images=[encoded("RGB", 300, 200, "JPEG")] * 2))
            assert from_tensor(pixels.pixel_values).shape == (2, 3, 224, 224)
            names = [m.name for m in stub.ListModels(preprocess_pb2.ListModelsRequest()).models]
            assert names == ["minilm", "tiny-clip", "tiny-clip-image"]
    finally:
        assert service.stop() == 0
    assert "models loaded: SERVING" in service.messages()


def test_unloadable_model_stops_the_process_with_its_name(tmp_path):
    env = {"MMSEARCH_MODELS": json.dumps({"broken": str(tmp_path / "nowhere")}), "MMSEARCH_PORT": "0",
           "MMSEARCH_METRICS_PORT": "0", "MMSEARCH_HOST": "127.0.0.1", "MMSEARCH_METRICS_HOST": "127.0.0.1"}
    done = subprocess.run([MMSEARCH, "serve", "preprocess"], env={**os.environ, **env},
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    assert "model 'broken'" in done.stderr and "artifact not found" in done.stderr
