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


def pytest_collection_modifyitems(items):
    """``make test`` runs the suite on pytest-xdist workers with ``--dist loadgroup``: each test
    module goes to one worker whole (its module fixtures, a stack or a server, start once), and so do
    all the image tests (they build the images once and share one container engine)."""
    import pytest

    for item in items:
        path = item.nodeid.split("::", 1)[0]
        group = "images" if path.startswith("tests/images/") else path
        item.add_marker(pytest.mark.xdist_group(group))
