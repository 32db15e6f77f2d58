"""Bad input answers INVALID_ARGUMENT naming the field, and the service keeps serving."""
from __future__ import annotations

import os
import struct
import zlib

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from mmsearch.v1 import preprocess_pb2, tensor_pb2
from mmsearch.services.preprocess.models import ModelLoadError, load_model
from mmsearch.services.preprocess.settings import PreprocessSettings
from mmsearch.core.settings import SettingsError, load_settings
from tests.preprocess.samples import encoded


def bomb_png(width: int, height: int) -> bytes:
    """A valid tiny PNG whose header declares width x height (CRC fixed), like a decompression bomb."""
    data = bytearray(encoded("RGB", 4, 4, "PNG"))
    ihdr = data.index(b"IHDR")
    data[ihdr + 4:ihdr + 12] = struct.pack(">II", width, height)
    data[ihdr + 17:ihdr + 21] = struct.pack(">I", zlib.crc32(bytes(data[ihdr:ihdr + 17])))
    return bytes(data)


TOKENIZE = "Tokenize"
IMAGES = "PreprocessImages"
CASES = [
    (TOKENIZE, dict(model="nope", texts=["a"]), "model 'nope' is unknown"),
    (TOKENIZE, dict(model="", texts=["a"]), "model '' is unknown"),
    (TOKENIZE, dict(model="tiny-clip-image", texts=["a"]), "model 'tiny-clip-image' has no tokenizer"),
    (TOKENIZE, dict(model="minilm", texts=[]), "texts is empty"),
    (TOKENIZE, dict(model="minilm", texts=["a"] * 65), "texts has 65 items, over the limit of 64"),
    (TOKENIZE, dict(model="minilm", texts=["ok", "x" * 8193]), "texts[1] has 8193 characters"),
    (TOKENIZE, dict(model="minilm", texts=["a"], dtype=tensor_pb2.DTYPE_FLOAT32), "dtype DTYPE_FLOAT32"),
    (TOKENIZE, dict(model="minilm", texts=["a"], dtype=99), "dtype 99"),
    (IMAGES, dict(model="nope", images=[b"x"]), "model 'nope' is unknown"),
    (IMAGES, dict(model="minilm", images=[b"x"]), "model 'minilm' has no image processor"),
    (IMAGES, dict(model="tiny-clip-image", images=[]), "images is empty"),
    (IMAGES, dict(model="small-image", images=[b"x"] * 65), "images has 65 items"),
    (IMAGES, dict(model="small-image", images=[encoded("RGB", 8, 8), b"not an image"]), "images[1] cannot be decoded"),
    (IMAGES, dict(model="small-image", images=[b""]), "images[0] is empty"),
    (IMAGES, dict(model="small-image", images=[encoded("RGB", 8, 8)[:40]]), "images[0] cannot be decoded"),
    (IMAGES, dict(model="small-image", images=[os.urandom(2_000_001)]), "images[0] is 2000001 bytes, over the limit"),
    (IMAGES, dict(model="small-image", images=[bomb_png(3000, 2000)]), "images[0] declares 3000x2000"),
    (IMAGES, dict(model="small-image", images=[bomb_png(60000, 60000)]), "images[0] is too large to decode safely"),
    (IMAGES, dict(model="small-image", images=[encoded("RGB", 8, 8)], dtype=tensor_pb2.DTYPE_INT64),
     "dtype DTYPE_INT64"),
    # Echoed values stay short (a 20,000-character model name made the status too large to
    # send: RESOURCE_EXHAUSTED), and extreme aspect ratios are refused before the resize explodes.
    (TOKENIZE, dict(model="m" * 20_000, texts=["a"]), "(20000 characters) is unknown"),
    (IMAGES, dict(model="x" * 20_000, images=[b"x"]), "(20000 characters) is unknown"),
    (IMAGES, dict(model="small-image", images=[encoded("RGB", 8, 8), encoded("L", 10, 40_000, "PNG")]),
     "images[1] is 10x40000: its long side is over 50 times its short side"),
    (IMAGES, dict(model="small-image", images=[encoded("RGB", 40_000, 3, "PNG")]), "images[0] is 40000x3"),
]


@pytest.mark.parametrize("method, fields, message", CASES, ids=[c[2][:40] for c in CASES])
async def test_bad_input_is_invalid_argument_and_service_keeps_serving(stub, method, fields, message):
    request = (preprocess_pb2.TokenizeRequest if method == TOKENIZE else preprocess_pb2.PreprocessImagesRequest)(**fields)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await getattr(stub, method)(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in info.value.details()
    assert len(info.value.details()) <= 1000
    ok = await stub.Tokenize(preprocess_pb2.TokenizeRequest(model="minilm", texts=["still serving"]))
    assert list(ok.input_ids.shape) == [1, 4]


async def test_health_serving_and_list_models(channel, stub):
    health = health_pb2_grpc.HealthStub(channel)
    for service in ("", "mmsearch.v1.PreprocessService"):
        response = await health.Check(health_pb2.HealthCheckRequest(service=service))
        assert response.status == health_pb2.HealthCheckResponse.SERVING
    models = {m.name: m for m in (await stub.ListModels(preprocess_pb2.ListModelsRequest())).models}
    assert (models["minilm"].text, models["minilm"].image, models["minilm"].max_length) == (True, False, 512)
    assert (models["tiny-clip"].max_length, models["tiny-clip-image"].image_size) == (77, 224)
    assert models["small-image"].image and not models["small-image"].text


def test_folder_without_model_files_is_a_load_error(tmp_path):
    with pytest.raises(ModelLoadError, match=r"model 'empty' .* has neither tokenizer.json nor preprocessor_config"):
        load_model("empty", str(tmp_path))
    with pytest.raises(ModelLoadError, match=r"model 'gone' .* artifact not found"):
        load_model("gone", str(tmp_path / "missing"))
    (tmp_path / "preprocessor_config.json").write_text('{"do_center_crop": false, "size": {"shortest_edge": 8}}')
    with pytest.raises(ModelLoadError, match="outputs would have different sizes"):
        load_model("ragged", str(tmp_path))


@pytest.mark.parametrize("env, variable", [
    ({}, "MMSEARCH_MODELS"),
    ({"MMSEARCH_MODELS": "{not json"}, "MMSEARCH_MODELS"),
    ({"MMSEARCH_MODELS": "{}"}, "MMSEARCH_MODELS"),
    ({"MMSEARCH_MODELS": '{"a": "/m"}', "MMSEARCH_MAX_BATCH_SIZE": "0"}, "MMSEARCH_MAX_BATCH_SIZE"),
    ({"MMSEARCH_MODELS": '{"a": "/m"}', "MMSEARCH_MAX_IMAGE_PIXELS": "many"}, "MMSEARCH_MAX_IMAGE_PIXELS"),
])
def test_settings_fail_fast_naming_the_variable(monkeypatch, env, variable):
    for key in list(os.environ):
        if key.startswith("MMSEARCH_"):
            monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(SettingsError, match=variable):
        load_settings(PreprocessSettings)


def test_settings_read_the_registry(monkeypatch):
    monkeypatch.setenv("MMSEARCH_MODELS", '{"minilm": "s3://models/minilm", "clip-image": "/repo/clip-image"}')
    monkeypatch.setenv("MMSEARCH_MAX_QUERY_CHARS", "100")
    settings = load_settings(PreprocessSettings)
    assert settings.models == {"minilm": "s3://models/minilm", "clip-image": "/repo/clip-image"}
    assert (settings.limits.query_chars, settings.port) == (100, 50051)


def test_resize_output_is_bounded_before_resizing():
    """The resize step's output is checked against the pixel limit before it runs."""
    from PIL import Image

    from mmsearch.core.image_preprocessing import ImageConfig, ImageInputError, ImageProcessor

    processor = ImageProcessor(ImageConfig.from_dict({"size": {"shortest_edge": 224}}))
    image = Image.new("RGB", (10, 400))  # aspect 40: allowed; resized to 224 x 8960
    assert processor.pixels(image).shape == (224, 224, 3)
    with pytest.raises(ImageInputError, match=r"images\[3\] is 10x400: resizing it to 224x8960 would make 2007040 "
                                              r"pixels, over the limit of 1000000"):
        processor.pixels(image, max_pixels=1_000_000, field="images[3]")
