"""The job stages' shared options: one variable per option, renamed ones still read under the old name."""
from __future__ import annotations

import typer
from typer.testing import CliRunner

from mmsearch.core import settings as settings_module
from mmsearch.jobs.cli import job_app
from mmsearch.jobs.options import TIMEOUT, ModelRepositoryUri, Timeout


def probe() -> typer.Typer:
    app = typer.Typer()

    @app.command()
    def show(repository: ModelRepositoryUri, timeout: Timeout = TIMEOUT) -> None:
        typer.echo(f"{repository} {timeout}")

    return app


def run(env: dict[str, str], *args: str) -> str:
    result = CliRunner().invoke(probe(), list(args), env={"MMSEARCH_REPOSITORY": None, "MMSEARCH_TIMEOUT": None,
                                                          "MMSEARCH_MODEL_REPOSITORY": None,
                                                          "MMSEARCH_DEPENDENCY_TIMEOUT_SECONDS": None, **env})
    assert result.exit_code == 0, result.output
    return result.output.strip()


def test_new_names_and_flags(monkeypatch):
    assert run({"MMSEARCH_MODEL_REPOSITORY": "/r", "MMSEARCH_DEPENDENCY_TIMEOUT_SECONDS": "2"}) == "/r 2.0"
    assert run({}, "--repository", "/r", "--timeout", "3") == "/r 3.0"  # the short flags stay


def test_old_variable_names_are_read_with_a_warning(monkeypatch, caplog):
    monkeypatch.setattr(settings_module, "_warned", set())
    with caplog.at_level("WARNING", logger="mmsearch.settings"):
        assert run({"MMSEARCH_REPOSITORY": "/old", "MMSEARCH_TIMEOUT": "4"}) == "/old 4.0"
    assert "MMSEARCH_REPOSITORY is deprecated: set MMSEARCH_MODEL_REPOSITORY" in caplog.text
    assert "MMSEARCH_TIMEOUT is deprecated: set MMSEARCH_DEPENDENCY_TIMEOUT_SECONDS" in caplog.text
    assert run({"MMSEARCH_REPOSITORY": "/old", "MMSEARCH_MODEL_REPOSITORY": "/new"}) == "/new 10.0"


def test_export_reads_the_old_queue_delay_in_microseconds(monkeypatch):
    command = typer.main.get_command(job_app).commands["export"]
    (delay,) = [p for p in command.params if p.name == "queue_delay_seconds"]
    assert delay.envvar == ["MMSEARCH_TRITON_QUEUE_DELAY_SECONDS", "MMSEARCH_MAX_QUEUE_DELAY_US"]
    ctx = typer.Context(command)
    monkeypatch.setenv("MMSEARCH_MAX_QUEUE_DELAY_US", "250")
    monkeypatch.delenv("MMSEARCH_TRITON_QUEUE_DELAY_SECONDS", raising=False)
    value, source = delay.consume_value(ctx, {})
    ctx.set_parameter_source(delay.name, source)
    assert delay.callback(ctx, delay, float(value)) == 250 / 1_000_000


def test_every_stage_declares_a_variable_once():
    """No stage has two options reading the same variable, and none reads a deprecated name first."""
    deprecated = {"MMSEARCH_REPOSITORY", "MMSEARCH_THREADS", "MMSEARCH_TIMEOUT", "MMSEARCH_MAX_BATCH_SIZE",
                  "MMSEARCH_MAX_QUEUE_DELAY_US"}
    for name, command in typer.main.get_command(job_app).commands.items():
        first = [([p.envvar] if isinstance(p.envvar, str) else p.envvar)[0] for p in command.params if p.envvar]
        assert len(first) == len(set(first)), name
        assert not set(first) & deprecated, name
