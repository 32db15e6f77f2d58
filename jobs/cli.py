"""``mmsearch job <stage>``: one sub-command per offline stage.

Each stage module registers its command on ``mmsearch.jobs.app.job_app``; importing
them here makes them part of the CLI. Stage modules keep heavy imports
(torch, transformers) inside their functions so the CLI starts fast.
"""
from __future__ import annotations

from mmsearch.jobs.app import job_app

# Stage modules register their sub-commands when imported (one line each).
import mmsearch.jobs.prepare  # noqa: F401,E402
import mmsearch.jobs.push_mongo  # noqa: F401,E402
import mmsearch.jobs.publish  # noqa: F401,E402
import mmsearch.jobs.push_milvus  # noqa: F401,E402
import mmsearch.jobs.export  # noqa: F401,E402
import mmsearch.jobs.encode  # noqa: F401,E402
import mmsearch.jobs.sync  # noqa: F401,E402
import mmsearch.jobs.evaluate  # noqa: F401,E402
import mmsearch.jobs.status  # noqa: F401,E402
import mmsearch.jobs.snapshot  # noqa: F401,E402
import mmsearch.jobs.restore  # noqa: F401,E402

__all__ = ["job_app"]
