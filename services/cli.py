"""``mmsearch serve preprocess|serving|web``."""
from __future__ import annotations

import typer

serve_app = typer.Typer(help="Run an online service (settings from MMSEARCH_* variables).", no_args_is_help=True)


@serve_app.command("preprocess")
def serve_preprocess() -> None:
    """The gRPC PreprocessService (tokenizers and image preprocessing)."""
    from services.preprocess.main import main

    main()


@serve_app.command("serving")
def serve_serving() -> None:
    """The gRPC RetrievalService (A/B arms, embed, match, rank, summary)."""
    from services.serving.main import main

    main()


@serve_app.command("web")
def serve_web() -> None:
    """The web page and JSON API (a gRPC client of serving)."""
    from services.web.main import main

    main()
