"""``mmsearch demo``: build a demo index once, then run preprocess, serving and web on localhost.

:func:`main` runs a plan (:mod:`mmsearch.dev.demo_plan`): the embedded
MongoDB-wire server (:mod:`mmsearch.dev.mongo`), the index build on first run
(:mod:`mmsearch.dev.build`), the services as subprocesses under a
:class:`~mmsearch.dev.processes.Supervisor`, readiness waits, and an ordered
shutdown on Ctrl-C/SIGTERM (web, serving, preprocess, then the document
store). Each service logs to ``data/demo/logs/<name>.log``.
"""
from __future__ import annotations

import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Iterator

import yaml

from mmsearch.core.settings import load_settings
from mmsearch.dev.build import build_index
from mmsearch.dev.demo_plan import DemoPlan, DemoSettings, default_model, plan, resolve_ports
from mmsearch.dev.processes import Supervisor, say, tail
from mmsearch.dev.scene_plan import ScenePlan, index_is_built
from mmsearch.dev.screenshots_plan import RANDOM_NOTICE


@contextlib.contextmanager
def running(p: DemoPlan, startup_timeout: float) -> Iterator[Supervisor]:
    """The document store, the index (built if needed) and the services, all ready; stopped on exit."""
    from mmsearch.dev.mongo import EmbeddedError, start_mongo

    sup = Supervisor()
    mongo = None
    try:
        try:
            mongo = start_mongo(p.mongo_dir, host=p.host, port=p.mongo_port, timeout=startup_timeout,
                                log_path=p.root / "logs" / "mongo.log")
        except EmbeddedError as exc:
            raise SystemExit(f"error: the document store did not start: {exc}") from None
        say(f"document store listening at {mongo.uri} (data in {p.mongo_dir})")
        for scene in p.scenes:
            if index_is_built(scene):
                say(f"reusing the demo index in {scene.marker.parent} (delete that folder to rebuild)")
                say_figures(scene)
            else:
                say(f"building the demo index for scene {scene.scene} (first run; reused afterwards)")
                build_index(p, scene)
            if scene.random_clip:
                say(f"{scene.scene}: {RANDOM_NOTICE}")
        p.experiments_path.write_text(yaml.safe_dump(dict(p.experiments), sort_keys=False))
        for service in p.services:
            sup.start(service)
            sup.wait_ready(service, startup_timeout)
        yield sup
    finally:
        sup.stop_all()
        if mongo is not None:
            mongo.stop()
            say("stopped the document store")


def say_figures(p: ScenePlan) -> None:
    """The figures the index was published on (the report evaluate wrote), when it has them."""
    from mmsearch.jobs.evaluate import summary_line

    report = next((Path(s.params["report"]) for s in p.build if s.stage == "publish" and "report" in s.params), None)
    if report is not None and report.is_file():
        say(summary_line(json.loads(report.read_text())["summary"]))


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def run(p: DemoPlan, startup_timeout: float) -> None:
    """Run a plan until Ctrl-C/SIGTERM or until a service dies; always stop everything."""
    previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        with running(p, startup_timeout) as sup:
            say(f"ready: open {p.url}  (Ctrl-C stops the demo)")
            while not (dead := sup.exited()):
                time.sleep(0.5)
            name, code, log = dead
            raise SystemExit(f"error: {name} stopped unexpectedly (exit code {code}); "
                             f"last lines of {log}:\n{tail(log)}")
    except KeyboardInterrupt:
        say("all processes stopped")
    finally:
        signal.signal(signal.SIGTERM, previous)


def main() -> None:
    settings = load_settings(DemoSettings)
    try:
        p = plan(settings, resolve_ports(settings), model=settings.model or default_model())
    except ValueError as exc:
        raise SystemExit(f"error: {exc}") from None
    run(p, settings.startup_timeout_seconds)
