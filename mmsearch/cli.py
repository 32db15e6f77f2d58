"""The ``mmsearch`` console script: ``serve``, ``job``, ``operator`` and ``demo``.

Entry points only: each command imports what it runs when it runs, so
``mmsearch serve web`` never loads the jobs, and no service loads torch.
(``job`` registers the stage commands, whose modules keep their heavy
imports inside their functions.)
"""
from __future__ import annotations

import typer

from jobs.cli import job_app

app = typer.Typer(help="mmsearch: multimodal semantic retrieval.", no_args_is_help=True, add_completion=False)
serve_app = typer.Typer(help="Run an online service (settings from MMSEARCH_* variables).", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
app.add_typer(job_app, name="job")


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


@app.command("operator")
def operator_run(
    namespace: str = typer.Option(None, envvar="MMSEARCH_OPERATOR_NAMESPACE",
                                  help="Watch one namespace (default: all namespaces)."),
) -> None:
    """Run the IndexJob operator (kopf)."""
    from mmsearch_operator.main import main

    main(namespace)


@app.command("demo")
def demo() -> None:
    """Build the demo index on first run and start preprocess, serving and web on localhost."""
    from mmsearch.dev.demo import main

    main()


if __name__ == "__main__":
    app()
