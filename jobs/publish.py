"""``mmsearch job publish``: point the scene's alias at ``<scene>_<version>`` (gated), prune old
versions; ``--rollback`` points it back at the previous kept version.

Decisions:
- Only a collection that push-milvus finished (its count check passed and it
  was marked complete) can be published: readers never see a half-built index.
- The switch is one step: one registry row upsert (the alias on Milvus Lite,
  which has no native aliases) plus the native ``create_alias``/``alter_alias``
  on a Milvus server; see :mod:`mmsearch.core.milvus`.
- "The last N versions" are the scene's N most recently pushed collections
  (by the push time recorded in each collection); the one now published is
  always kept too (after a rollback to an older version that makes N + 1);
  every other collection of the scene is dropped. Only collections whose recorded scene is
  this scene are considered (so scene ``a`` never drops ``a_b_1`` of scene
  ``a_b``), and a collection that another native alias still points at is kept.
- The gate: with ``--report`` (the JSON ``mmsearch job evaluate`` wrote for
  this collection) and thresholds (``--min-recall``, ``--max-regression``
  against the version published now, ``--max-p99-ms``), a candidate that falls
  short is refused: exit 1, one line naming each metric, its value and the
  threshold (:func:`mmsearch.core.quality.shortfalls`); the alias does not
  move. ``--force`` publishes it anyway, says so on stderr and records
  ``forced: true`` with the shortfalls. A threshold without a report, or a
  report about another collection, is refused. The collection's state keeps
  the report's figures (``evaluation``) and the decision (``published``), so
  ``mmsearch job status`` and serving's ListScenes show what is live and how
  it measured.
- ``--rollback`` (no ``--version``) points the alias at the first collection
  of the alias's history (the targets it had before, newest first) that still
  exists and is complete; refused when there is none. It is one registry row
  upsert (and the native alias first, on a server), like a publish, and takes
  that collection out of the history (a second rollback goes further back).
- Live writes (with ``--mongo-uri``, the write log's MongoDB): the target
  gets the write log's entries it has not seen before the alias moves, and
  what arrived meanwhile right after (:mod:`mmsearch.jobs.replay`); a
  rollback's target gets every write made since it stopped serving. The
  outcome says how many were written (``replayed``) and up to which log
  position the target holds them (``writes_position``).
"""
from __future__ import annotations

import json
import math
import sys
import time
from typing import Callable

import typer

from mmsearch.core import artifacts
from mmsearch.core.milvus.connection import session
from mmsearch.core.milvus.names import collection_name
from mmsearch.core.milvus.record import is_complete, scene_collections
from mmsearch.core.milvus.registry import alias_history, read_state, resolve_alias, rollback_choice
from mmsearch.core.milvus.registry_writes import set_alias, update_state
from mmsearch.core.milvus.rows import drop_collection
from mmsearch.core.quality import Thresholds, shortfalls
from mmsearch.core.redact import redact
from mmsearch.jobs.app import job_app
from mmsearch.jobs.options import (
    Collection, Database, MilvusToken, MilvusUri, ModelRepositoryUri, Scene, TIMEOUT, Timeout, Version,
)
from mmsearch.jobs.errors import JobError, exit_on_error
from mmsearch.jobs.progress import check_summary_file, emit, write_summary_file
from mmsearch.jobs.replay import LogAccess, Replayer


def versions_to_drop(collections: list[dict], published: str, keep: int, previous: str | None = None) -> list[str]:
    """Names to drop from the scene's ``collections`` (oldest first): all but the newest ``keep``,
    ``published`` (a rollback to an older version keeps it besides the newest ``keep``) and ``previous``,
    the version the alias pointed at before: serving searches it until it follows the move, and it is
    what a rollback returns to."""
    kept = {c["name"] for c in collections[-keep:]} | {published} | ({previous} if previous else set())
    return [c["name"] for c in collections if c["name"] not in kept]


def read_report(uri: str, collection: str) -> dict:
    """The summary of evaluate's report at ``uri``; JobError unless it is about ``collection``."""
    try:
        summary = json.loads(artifacts.read_bytes(uri))["summary"]
    except artifacts.ArtifactError as exc:
        raise JobError(f"--report {uri}: {exc}") from None
    except (ValueError, KeyError, TypeError):
        raise JobError(f"--report {uri}: not a report written by `mmsearch job evaluate`") from None
    if not isinstance(summary, dict):
        raise JobError(f"--report {uri}: not a report written by `mmsearch job evaluate`")
    figures = [("recall", summary.get("recall")), ("p99_ms", summary.get("p99_ms"))]
    if "compare" in summary:
        figures += [("regression", summary.get("regression")),
                    ("compare.recall", (summary["compare"] or {}).get("recall")
                     if isinstance(summary["compare"], dict) else None)]
    for key, value in figures:
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise JobError(f"--report {uri}: summary.{key} is {value!r}, not a number: the report is damaged or "
                           "was not written by `mmsearch job evaluate`; evaluate again")
    if summary.get("collection") != collection:
        raise JobError(f"--report {uri} measured collection {summary.get('collection')!r}, not {collection}: "
                       f"run `mmsearch job evaluate --collection {collection}`")
    return summary


def _prune(client, scene: str, published: str, keep: int, previous: str | None) -> list[str]:
    dropped = []
    for old in versions_to_drop(scene_collections(client, scene), published, keep, previous):
        try:
            if client.list_aliases(old).get("aliases"):
                print(f"warning: keeping {old}: a native alias still points at it", file=sys.stderr)
                continue
        except Exception:
            pass  # Milvus Lite: no native aliases to check
        drop_collection(client, old)
        dropped.append(old)
    return dropped


def publish(milvus_uri: str, scene: str, version: str | None = None, *, keep: int = 2, report: str | None = None,
            min_recall: float | None = None, max_regression: float | None = None, max_p99_ms: float | None = None,
            force: bool = False, rollback: bool = False, token: str = "", timeout: float = 10.0,
            writes: LogAccess | None = None) -> dict:
    """Alias ``scene`` -> ``scene_version`` (gated); returns ``{alias, collection, previous, dropped, ...}``."""
    thresholds = Thresholds(min_recall, max_regression, max_p99_ms)
    bad = thresholds.invalid()
    if bad:
        raise JobError("; ".join(bad) + " (a threshold that is not a number would pass every candidate)")
    if keep < 1:
        raise JobError(f"--keep {keep}: must be at least 1 (the published version)")
    if rollback:
        if version or report or thresholds.any() or force:
            raise JobError("--rollback goes back to the previous kept version: give no --version, --report, "
                           "thresholds or --force with it")
        return roll_back(milvus_uri, scene, token=token, timeout=timeout, writes=writes)
    if not version:
        raise JobError("--version is required (or --rollback to go back to the previous version)")
    if thresholds.any() and not report:
        raise JobError("--min-recall, --max-regression and --max-p99-ms need --report (the JSON that "
                       "`mmsearch job evaluate` wrote for this collection)")
    name = collection_name(scene, version)
    summary = read_report(report, name) if report else None
    with session(milvus_uri, f"while publishing {name}", token=token, timeout=timeout) as client:
        if not client.has_collection(name):
            raise JobError(f"collection {name} does not exist in {redact(milvus_uri)}: run push-milvus "
                           f"--scene {scene} --version {version} first")
        if not is_complete(client, name):
            raise JobError(f"collection {name} is not complete (push-milvus did not finish); re-run push-milvus")
        current = resolve_alias(client, scene)
        missed = shortfalls(summary, thresholds, published=current) if summary else []
        if missed and not force:
            raise JobError(f"quality gate: {'; '.join(missed)}; {name} not published "
                           f"({current or 'nothing'} stays live; --force publishes anyway)")
        if missed:
            print(f"warning: --force: publishing {name} although {'; '.join(missed)}", file=sys.stderr, flush=True)
        decision = {"at": time.time(), "forced": bool(missed), "shortfalls": missed,
                    "thresholds": thresholds.to_dict(), "previous": current}
        update_state(client, name, published=decision, **({"evaluation": summary} if summary else {}))
        previous, replayed = _move(client, scene, name, writes)
        dropped = _prune(client, scene, name, keep, previous)
        documents = read_state(client, name).get("count")
    return {"alias": scene, "collection": name, "previous": previous, "dropped": dropped, "forced": bool(missed),
            "documents": documents, **replayed,
            **({"recall": summary["recall"], "k": summary["k"]} if summary else {})}


after_step: Callable[[str], None] | None = None  # tests: called after each step of a move ("replayed", "moved")


def _step(name: str) -> None:
    if after_step is not None:
        after_step(name)


def _move(client, scene: str, name: str, writes: LogAccess | None, history: list[str] | None = None):
    """Point ``scene`` at ``name`` with the write log replayed around the move (see the module doc):
    (the previous target, the outcome's replay fields)."""
    if writes is None:
        return set_alias(client, scene, name, history=history), {}
    replayer = Replayer(writes, client, scene, name)
    try:
        start = replayer.position()
        before, _ = replayer.run(after=start, settle=False)
        _step("replayed")
        previous = set_alias(client, scene, name, history=history)
        _step("moved")
        # From the same start again, not from where the first pass got: a read of the log is no snapshot, so
        # it may have seen an entry while missing an older one still being written (the writer applies that
        # one to the old target, having resolved the alias before the move). A read begun after the move sees
        # every entry logged before it; what the first pass applied is skipped by its content hash.
        after, position = replayer.run(after=start, settle=True)
    finally:
        replayer.close()
    return previous, {"replayed": before + after, "writes_position": position}


def roll_back(milvus_uri: str, scene: str, *, token: str = "", timeout: float = 10.0,
              writes: LogAccess | None = None) -> dict:
    """Point ``scene`` back at the previous kept version (see the module doc)."""
    with session(milvus_uri, f"while rolling back {scene}", token=token, timeout=timeout) as client:
        current = resolve_alias(client, scene)
        if current is None:
            raise JobError(f"scene {scene} has no published version to roll back from")
        history = alias_history(client, scene)
        target, rest = rollback_choice(
            history, lambda c: c != current and client.has_collection(c) and is_complete(client, c))
        if target is None:
            raise JobError(f"cannot roll back scene {scene}: no previous version is kept (it was published before: "
                           f"{', '.join(history) or 'none'}; dropped ones cannot come back); publish a --version")
        update_state(client, target, published={"at": time.time(), "forced": False, "rollback_from": current})
        _, replayed = _move(client, scene, target, writes, history=rest)
        state = read_state(client, target)
    figures = state.get("evaluation") or {}
    return {"alias": scene, "collection": target, "previous": current, "dropped": [], "rollback": True,
            "documents": state.get("count"), **replayed, **({"recall": figures["recall"], "k": figures.get("k")}
                                                if isinstance(figures.get("recall"), (int, float)) else {})}


@job_app.command("publish")
def publish_command(
    milvus_uri: MilvusUri,
    scene: Scene,
    version: Version = None,
    keep: int = typer.Option(2, envvar="MMSEARCH_KEEP", help="Versions of the scene to keep, the published one included."),
    report: str = typer.Option(None, envvar="MMSEARCH_REPORT", help="The report `mmsearch job evaluate` wrote."),
    min_recall: float = typer.Option(None, envvar="MMSEARCH_MIN_RECALL", help="Refuse below this recall@k."),
    max_regression: float = typer.Option(None, envvar="MMSEARCH_MAX_REGRESSION",
                                         help="Refuse when recall@k is this much below the published version's."),
    max_p99_ms: float = typer.Option(None, envvar="MMSEARCH_MAX_P99_MS", help="Refuse above this query p99 (ms)."),
    force: bool = typer.Option(False, "--force", envvar="MMSEARCH_FORCE", help="Publish even when the gate refuses."),
    rollback: bool = typer.Option(False, "--rollback", help="Point the alias back at the previous kept version."),
    summary_file: str = typer.Option(None, envvar="MMSEARCH_SUMMARY_FILE",
                                     help="Also write the outcome JSON here (the operator reads it from the pod)."),
    mongo_uri: str = typer.Option(None, envvar="MMSEARCH_MONGO_URI",
                                  help="MongoDB of the write log and the summaries: live writes are replayed onto "
                                       "the version the alias moves to (none: no live writes to replay)."),
    writes_database: str = typer.Option("mmsearch", envvar="MMSEARCH_WRITER_LOG_DATABASE",
                                        help="MongoDB database of the write log (the writer's)."),
    database: Database = "mmsearch",
    collection: Collection = "{collection}",
    repository: ModelRepositoryUri = None,
    milvus_token: MilvusToken = "",
    timeout: Timeout = TIMEOUT,
) -> None:
    """Point alias <scene> at <scene>_<version> in one step (gated on --report); drop versions beyond --keep."""
    with exit_on_error():
        check_summary_file(summary_file)
        writes = LogAccess(mongo_uri, writes_database, database, collection, repository, timeout) if mongo_uri else None
        summary = publish(milvus_uri, scene, version, keep=keep, report=report, min_recall=min_recall,
                          max_regression=max_regression, max_p99_ms=max_p99_ms, force=force, rollback=rollback,
                          token=milvus_token, timeout=timeout, writes=writes)
        write_summary_file(summary_file, summary)
        emit("publish", "done", **summary)
