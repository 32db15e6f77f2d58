"""The Typer app that every stage module registers its sub-command on."""
from __future__ import annotations

import typer

job_app = typer.Typer(
    help="Offline indexing stages. Every flag can also be set as an MMSEARCH_<FLAG> environment variable.",
    no_args_is_help=True,
)
