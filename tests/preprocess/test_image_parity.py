"""pixel_values equal transformers' CLIPImageProcessor within 1e-4 for many modes, sizes and formats."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image
from transformers import CLIPImageProcessor

from mmsearch.v1 import preprocess_pb2, tensor_pb2
from mmsearch.core.codec import from_tensor
from mmsearch.core.image_preprocessing import ImageProcessor, decode
from tests.preprocess.samples import IMAGE_CONFIGS, MODES, SIZES, encoded


def reference(folder, images: list[bytes]) -> np.ndarray:
    processor = CLIPImageProcessor.from_pretrained(folder)
    return processor(images=[Image.open(io.BytesIO(data)) for data in images], return_tensors="np")["pixel_values"]


@pytest.fixture(scope="module")
def samples() -> list[tuple[str, bytes]]:
    out = []
    for i, (mode, fmt) in enumerate(MODES):
        for j, (width, height) in enumerate(SIZES):
            out.append((f"{mode}/{fmt}/{width}x{height}", encoded(mode, width, height, fmt, seed=i * 10 + j)))
    return out


@pytest.mark.parametrize("model", sorted(IMAGE_CONFIGS))
async def test_service_matches_clip_image_processor(stub, model_repo, samples, model):
    expected = reference(model_repo / model, [data for _, data in samples])
    got = []
    for start in range(0, len(samples), 64):
        batch = [data for _, data in samples[start:start + 64]]
        response = await stub.PreprocessImages(preprocess_pb2.PreprocessImagesRequest(model=model, images=batch))
        got.append(from_tensor(response.pixel_values, "pixel_values"))
    pixels = np.concatenate(got)
    assert pixels.dtype == np.float32 and pixels.shape == expected.shape
    worst = np.abs(pixels - expected).reshape(len(samples), -1).max(axis=1)
    bad = [name for (name, _), diff in zip(samples, worst) if diff > 1e-4]
    assert not bad, f"pixel_values differ by more than 1e-4 for {bad} (max {worst.max()})"


async def test_float16_output(stub, model_repo):
    data = [encoded("RGB", 64, 48, "PNG")]
    response = await stub.PreprocessImages(preprocess_pb2.PreprocessImagesRequest(
        model="small-image", images=data, dtype=tensor_pb2.DTYPE_FLOAT16))
    pixels = from_tensor(response.pixel_values)
    assert pixels.dtype == np.float16 and pixels.shape == (1, 3, 32, 30)
    np.testing.assert_allclose(pixels, reference(model_repo / "small-image", data), atol=1e-2)


def test_pure_processor_is_bit_identical(model_repo):
    """The Pillow+numpy path reproduces the reference exactly (LUT of transformers' arithmetic)."""
    processor = ImageProcessor.from_folder(model_repo / "tiny-clip-image")
    data = [encoded("RGB", 640, 480, "JPEG", seed=1), encoded("RGBA", 200, 300, "PNG", seed=2)]
    got = processor.process([decode(d, i, 10**8, 10**8) for i, d in enumerate(data)])
    np.testing.assert_array_equal(got, reference(model_repo / "tiny-clip-image", data))
