"""The ``mmsearch`` console script: ``serve``, ``job``, ``operator`` and ``demo``."""
from __future__ import annotations

import typer

from jobs.cli import job_app
from services.cli import serve_app

app = typer.Typer(help="mmsearch: multimodal semantic retrieval.", no_args_is_help=True, add_completion=False)
app.add_typer(serve_app, name="serve")
app.add_typer(job_app, name="job")


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
    from services.demo import main

    main()


if __name__ == "__main__":
    app()
