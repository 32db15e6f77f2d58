"""The ``mmsearch`` console script: ``serve``, ``job``, ``experiments``, ``operator`` and ``demo``.

Entry points only: each command imports what it runs when it runs, so
``mmsearch serve web`` never loads the jobs, and no service loads torch.
``job`` is loaded when it is asked for (its stages import numpy, onnxruntime,
pymilvus ...), so ``mmsearch operator`` starts with the operator's extra alone;
where the jobs' extra is not installed, ``mmsearch job`` says so.
"""
from __future__ import annotations

import sys

import typer
from typer.core import TyperGroup

from mmsearch.jobs.options import EventsDatabase, EventsMongoUri
from mmsearch.core import events

JOB_HELP = "Offline indexing stages (run by the IndexJob operator as Kubernetes Jobs)."


def _job_group():
    """``mmsearch job``: the stages' group, or, without the jobs' dependencies, a command saying what to install."""
    try:
        from mmsearch.jobs.cli import job_app
    except ModuleNotFoundError as exc:
        missing = exc.name
        unavailable = typer.Typer(add_completion=False)

        @unavailable.command("job", help=JOB_HELP,
                             context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
        def job() -> None:
            typer.echo(f"mmsearch job needs the jobs' dependencies (module {missing!r} is not installed here): "
                       "pip install 'mmsearch[jobs]', or run the jobs image", err=True)
            raise typer.Exit(2)
        command = typer.main.get_command(unavailable)
    else:
        command = typer.main.get_command(job_app)
        command.params = [p for p in command.params if p.name not in ("install_completion", "show_completion")]
    command.name = "job"
    return command


class _Root(TyperGroup):
    """The root group, with ``job`` loaded only when it is named (or listed by --help)."""

    def list_commands(self, ctx):
        return [*super().list_commands(ctx), "job"]

    def get_command(self, ctx, cmd_name):
        return _job_group() if cmd_name == "job" else super().get_command(ctx, cmd_name)


class _Cli(typer.Typer):
    """The console script: click's usage errors (an unknown option, a bad enum or number) as one
    ``error: ...`` line on stderr and exit 2, like every other refusal, instead of a framed usage box."""

    def __call__(self, *args, **kwargs):
        try:
            code = super().__call__(*args, **{**kwargs, "standalone_mode": False})
        except typer.Abort:
            print("error: aborted", file=sys.stderr, flush=True)
            sys.exit(1)
        except typer.TyperException as exc:  # click's (Typer's vendored click's) usage and parameter errors
            if type(exc).__name__ == "NoArgsIsHelpError":  # `mmsearch job`: the help, as before
                exc.show()
            else:
                ctx = getattr(exc, "ctx", None)
                hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
                print(f"error: {_one_line(exc.format_message()).replace('Value error, ', '')}{hint}", file=sys.stderr,
                      flush=True)
            sys.exit(exc.exit_code)
        sys.exit(code if isinstance(code, int) else 0)


def _one_line(message: str) -> str:
    return " ".join(message.split())


app = _Cli(cls=_Root, help="mmsearch: multimodal semantic retrieval.", no_args_is_help=True,
           add_completion=False)
serve_app = typer.Typer(help="Run an online service (settings from MMSEARCH_* variables).", no_args_is_help=True)
app.add_typer(serve_app, name="serve")
experiments_app = typer.Typer(help="A/B experiments: what each arm does for users.", no_args_is_help=True)
app.add_typer(experiments_app, name="experiments")
keys_app = typer.Typer(help="API keys: mint one for the key file (MMSEARCH_API_KEYS_FILE).", no_args_is_help=True)
app.add_typer(keys_app, name="keys")


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


@serve_app.command("writer")
def serve_writer() -> None:
    """The gRPC DocumentService: live upserts, deletes and gets, through the write log."""
    from mmsearch.services.writer.main import main

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
    mongo_uri: EventsMongoUri = "mongodb://127.0.0.1:27017",
    events_database: EventsDatabase = events.DEFAULT_DATABASE,
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


@keys_app.command("create")
def keys_create(
    scopes: str = typer.Option(..., help="Comma-separated: search, feedback, write, admin, relay (relay: the web "
                                         "service's key to serving)."),
    scenes: str = typer.Option(None, help="Comma-separated scenes the key may touch (default: every scene)."),
    rate: float = typer.Option(None, help="Requests per second the key may make, sustained (default: no limit)."),
    burst: int = typer.Option(None, help="Requests the key may make at once (default: twice the rate)."),
    name: str = typer.Option("", help="A label for people (who holds the key); rotation: mint a new key with the "
                                      "same name, remove the old line later."),
) -> None:
    """Mint a key: prints the key (give it to the caller; it is stored nowhere) then the line for the key file."""
    import datetime as dt

    from mmsearch.core.access.keys import KeyFileError, mint

    def split(text: str | None) -> list[str] | None:
        return None if text is None else [part.strip() for part in text.split(",") if part.strip()]

    try:
        key, line = mint(split(scopes) or [], split(scenes), rate, burst, name,
                         created=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))
    except KeyFileError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        raise typer.Exit(2)
    print("the key (give it to the caller; shown once, stored nowhere):", file=sys.stderr)
    typer.echo(key)
    print("its line for the key file (append it to the Secret's keys.jsonl; only the hash is in it):", file=sys.stderr)
    typer.echo(line)


@app.command("operator")
def operator_run(
    namespace: str = typer.Option(None, help="Watch one namespace (default: MMSEARCH_OPERATOR_NAMESPACE, else "
                                             "all namespaces)."),
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
