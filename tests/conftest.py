"""Shared fixtures live in tests/fixtures/, one module per area (each owned by its area)."""
import os

# Nothing is downloaded at test time.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

pytest_plugins = [
    "tests.fixtures.models",   # exported MiniLM / tiny CLIP model repositories (export area)
    "tests.fixtures.servers",  # MongoDB-wire server, moto S3, built stdlib index (data area)
    "tests.fixtures.triton",   # a real tritonserver serving exported models (serving area)
    "tests.fixtures.stack",    # preprocess + serving on the stdlib index: `search_stack` (serving area)
]
