"""The ``mmsearch`` console script: ``serve``, ``job``, ``experiments``, ``operator`` and ``demo``.

Entry points only: each command imports what it runs when it runs, so
``mmsearch serve web`` never loads the jobs, and no service loads torch.
(``job`` registers the stage commands, whose modules keep their heavy
imports inside their functions.)
"""
from __future__ import annotations

import typer

from mmsearch.jobs.cli import job_app
from mmsearch.core import events

app = typer.Typer(help="mmsearch: multimodal semantic retrieval.", no_args_is_help=True, add_completion=False)
serve_app = typer.Typer(help="Run an online service (settings from MMSEARCH_* variables).", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
app.add_typer(job_app, name="job")
experiments_app = typer.Typer(help="A/B experiments: what each arm does for users.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")


@serve_app.command("preprocess")
def serve_preprocess() -> None:
    """The gRPC PreprocessService (tokenizers and image preprocessing)."""
    from mmsearch.services.preprocess.main import main

    main()


@serve_app.command("serving")
def serve_serving() -> None:
    """The gRPC RetrievalService (A/B arms, embed, match, rank, summary)."""
    from mmsearch.services.serving.main import main

    main()


@serve_app.command("web")
def serve_web() -> None:
    """The web page and JSON API (a gRPC client of serving)."""
    from mmsearch.services.web.main import main

    main()


@experiments_app.command("report")
def experiments_report(
    scene: str = typer.Option(..., help="The scene whose layers and arms to report."),
    since: str = typer.Option(None, help="Only impressions since then: 7d, 12h, 30m, or an ISO date/time "
                                         "(default: all that are stored)."),
    output_format: str = typer.Option("markdown", "--format", help="markdown or json."),
    mongo_uri: str = typer.Option("mongodb://127.0.0.1:27017", envvar=["MMSEARCH_EVENTS_MONGO_URI", "MMSEARCH_MONGO_URI"],
                                  help="MongoDB holding serving's events (serving's MMSEARCH_EVENTS_MONGO_URI, "
                                       "else MMSEARCH_MONGO_URI)."),
    events_database: str = typer.Option(events.DEFAULT_DATABASE, envvar="MMSEARCH_EVENTS_DATABASE",
                                        help="Database of the impressions and feedback collections."),
    alpha: float = typer.Option(0.05, help="Significance level of the test (split over a layer's arms)."),
    power: float = typer.Option(0.8, help="Power the sample size is computed for."),
    mde: float = typer.Option(0.01, help="Minimum detectable effect: an absolute CTR change (0.01 = 1 point)."),
    control: list[str] = typer.Option([], help="LAYER=ARM: compare that layer's arms against ARM instead of its "
                                               "default (repeatable)."),
    timeout: float = typer.Option(10.0, help="Seconds to wait for MongoDB."),
) -> None:
    """Impressions, clicks, CTR and MRR per layer and arm, each arm against its layer's default."""
    from mmsearch.jobs.errors import exit_on_error
    from mmsearch.reports.experiment_report import report

    with exit_on_error():
        typer.echo(report(scene=scene, mongo_uri=mongo_uri, database=events_database, since=since, alpha=alpha,
                          power=power, mde=mde, controls=control, output_format=output_format, timeout=timeout),
                   nl=False)


@app.command("operator")
def operator_run(
    namespace: str = typer.Option(None, envvar="MMSEARCH_OPERATOR_NAMESPACE",
                                  help="Watch one namespace (default: all namespaces)."),
) -> None:
    """Run the IndexJob operator (kopf)."""
    from mmsearch.operator.main import main

    main(namespace)


@app.command("demo")
def demo() -> None:
    """Build the demo index on first run and start preprocess, serving and web on localhost."""
    from mmsearch.dev.demo import main

    main()


if __name__ == "__main__":
    app()
