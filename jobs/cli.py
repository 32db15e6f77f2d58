"""``mmsearch job <stage>``: one sub-command per offline stage.

Each stage module registers its command on ``jobs.app.job_app``; importing
them here makes them part of the CLI. Stage modules keep heavy imports
(torch, transformers) inside their functions so the CLI starts fast.
"""
from __future__ import annotations

from jobs.app import job_app

# Stage modules register their sub-commands when imported (one line each).
import jobs.prepare  # noqa: F401,E402
import jobs.push_mongo  # noqa: F401,E402
import jobs.publish  # noqa: F401,E402
import jobs.push_milvus  # noqa: F401,E402
import jobs.export  # noqa: F401,E402
import jobs.encode  # noqa: F401,E402
import jobs.sync  # noqa: F401,E402
import jobs.evaluate  # noqa: F401,E402
import jobs.status  # noqa: F401,E402

__all__ = ["job_app"]
