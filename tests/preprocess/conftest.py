"""Session fixtures: a model repository built offline and a real grpc.aio PreprocessService on 127.0.0.1:0."""
from __future__ import annotations

import grpc
import pytest

from mmsearch.core.channels import message_options
from mmsearch.v1 import preprocess_pb2_grpc
from mmsearch.services.preprocess.main import start
from mmsearch.services.preprocess.settings import PreprocessSettings
from tests.preprocess import model_folders
from tests.preprocess.samples import IMAGE_CONFIGS

# Folder name -> how it is built. The image configs cover CLIP's default, a small odd crop, a crop
# larger than the resized image (zero padding) and a fixed-size resize without crop.
LIMITS = {"limits": {"batch_size": 64, "query_chars": 8192, "image_bytes": 2_000_000, "image_pixels": 4_000_000},
          "image_threads": 2}


@pytest.fixture(scope="session")
def model_repo(tmp_path_factory):
    """REPO with NAME folders as the export job lays them out."""
    repo = tmp_path_factory.mktemp("model-repo")
    model_folders.minilm(repo / "minilm")
    model_folders.clip_bpe(repo / "tiny-clip")
    for name, config in IMAGE_CONFIGS.items():
        model_folders.clip_image(repo / name, **config)
    return repo


@pytest.fixture(scope="session")
def registry(model_repo) -> dict[str, str]:
    """MMSEARCH_MODELS for the repository (one entry as a file:// URI)."""
    names = ["minilm", "tiny-clip", *IMAGE_CONFIGS]
    models = {name: str(model_repo / name) for name in names}
    models["tiny-clip"] = (model_repo / "tiny-clip").as_uri()
    return models


@pytest.fixture(scope="session")
def settings(registry) -> PreprocessSettings:
    return PreprocessSettings(models=registry, host="127.0.0.1", port=0, metrics_host="127.0.0.1",
                              metrics_port=0, **LIMITS)


@pytest.fixture(scope="session")
async def preprocess_server(settings):
    running = await start(settings)
    yield running
    await running.stop(0)


@pytest.fixture(scope="session")
async def channel(preprocess_server):
    options = message_options()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{preprocess_server.port}", options=options) as chan:
        yield chan


@pytest.fixture(scope="session")
def stub(channel) -> preprocess_pb2_grpc.PreprocessServiceStub:
    return preprocess_pb2_grpc.PreprocessServiceStub(channel)
