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


def pytest_xdist_make_scheduler(config, log):
    """``make test`` runs the suite on pytest-xdist workers: each test module goes to one worker whole (its
    module fixtures, a stack or a server, start once), and so do all the image tests (they build the images
    once and share one container engine). xdist's own ``loadgroup`` cannot do this under pytest 9 (it renames
    test ids through an attribute pytest no longer reads), so the grouping is this scheduler's."""
    from xdist.scheduler import LoadScopeScheduling

    class ByModule(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return _group(nodeid)

    return ByModule(config, log)


def pytest_collection_modifyitems(items):
    """The image tests come first: they are the longest group, so one worker starts on them while the other
    takes the rest (``make test`` passes ``--no-loadscope-reorder``, so groups start in collection order)."""
    items.sort(key=lambda item: _group(item.nodeid) != "images")  # stable: the rest keep their order


def _group(nodeid: str) -> str:
    path = nodeid.split("::", 1)[0]
    return "images" if path.startswith("tests/images/") else path
