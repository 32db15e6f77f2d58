"""``mmsearch job <stage>``: one sub-command per offline stage."""
from __future__ import annotations

import typer

job_app = typer.Typer(help="Offline indexing stages (each idempotent and resumable).", no_args_is_help=True)
