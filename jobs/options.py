"""The options the job stages share, declared once (``Annotated`` types for Typer).

Every stage that talks to Milvus takes ``MilvusUri``, ``MilvusToken`` and
``Timeout``; every stage that reads a model takes ``ModelRepository`` and
``Model``; and so on: one flag, one variable, one help text. A stage declares
``milvus_uri: MilvusUri`` (required) or ``batch_size: BatchSize = 1000`` (its
own default).

Renamed variables stay readable under their old names for a while: the old
name is the option's second ``envvar``; :func:`deprecated` logs a warning
naming both and converts the value where the unit changed.
"""
from __future__ import annotations

import os
from typing import Annotated, Any, Callable

import typer

from mmsearch.core.settings import Deprecated, warn_deprecated


def deprecated(old: str, new: str, convert: Callable[[Any], Any] | None = None, note: str = "") -> Callable:
    """A Typer callback: when the value came from ``old`` (``new`` unset), warn and convert it."""
    alias = Deprecated(old, new, note=note)

    def callback(ctx: typer.Context, param: typer.CallbackParam, value: Any) -> Any:
        source = ctx.get_parameter_source(param.name)
        if getattr(source, "name", "") == "ENVIRONMENT" and new not in os.environ and old in os.environ:
            warn_deprecated(alias)
            return convert(value) if convert is not None and value is not None else value
        return value

    return callback


def _renamed(new: str, old: str, **kwargs: Any) -> dict[str, Any]:
    return {"envvar": [new, old], "callback": deprecated(old, new, **kwargs)}


Workdir = Annotated[str, typer.Option(
    envvar="MMSEARCH_WORKDIR",
    help="Stage folder (a path, file:// or s3://bucket/prefix): corpus.jsonl, the vectors, the reports.")]
MilvusUri = Annotated[str, typer.Option(envvar="MMSEARCH_MILVUS_URI", help="A Milvus Lite file or http(s)://host:port.")]
MilvusToken = Annotated[str, typer.Option(envvar="MMSEARCH_MILVUS_TOKEN", help="Milvus server token (user:password).")]
MongoUri = Annotated[str, typer.Option(envvar="MMSEARCH_MONGO_URI", help="MongoDB URI (mongodb://host:port).")]
Database = Annotated[str, typer.Option(envvar="MMSEARCH_DATABASE", help="MongoDB database of the summaries.")]
Collection = Annotated[str, typer.Option(
    envvar="MMSEARCH_COLLECTION", help="MongoDB collection of the summaries; {collection} stands for the Milvus "
                                       "collection's name (versioned summaries).")]
Scene = Annotated[str, typer.Option(envvar="MMSEARCH_SCENE", help="The scene (its alias names the published version).")]
Version = Annotated[str, typer.Option(envvar="MMSEARCH_VERSION", help="The index version, collection <scene>_<version> (sync, publish: default the live one).")]
ModelRepositoryUri = Annotated[str, typer.Option(
    "--model-repository", "--repository", **_renamed("MMSEARCH_MODEL_REPOSITORY", "MMSEARCH_REPOSITORY"),
    help="Model repository export writes (a path, file:// or s3://bucket/prefix); serving reads the same.")]
Model = Annotated[str, typer.Option(
    envvar="MMSEARCH_MODEL", help="A tower in the model repository: NAME (texts) or NAME-image (images); evaluate's default: "
                                 "the collection's own.")]
BatchSize = Annotated[int, typer.Option(envvar="MMSEARCH_BATCH_SIZE", min=1, help="Records per batch.")]
TextField = Annotated[str, typer.Option(
    envvar="MMSEARCH_TEXT_FIELD", help="Corpus field encoded for text corpora (encode's default: question); "
                                       "F is the text template {F}.")]
TextTemplate = Annotated[str, typer.Option(
    envvar="MMSEARCH_TEXT_TEMPLATE", help="What text corpora embed, over each record's fields, e.g. "
                                          "'{question}: {answer}' (instead of --text-field).")]
Device = Annotated[str, typer.Option(envvar="MMSEARCH_DEVICE", help="auto (CUDA if available) | cpu | cuda.")]
OnnxThreads = Annotated[int, typer.Option(
    "--onnx-intra-op-threads", "--threads", min=0,
    **_renamed("MMSEARCH_ONNX_INTRA_OP_THREADS", "MMSEARCH_THREADS"),
    help="onnxruntime intra-op threads (0: one per core).")]
Timeout = Annotated[float, typer.Option(
    "--dependency-timeout-seconds", "--timeout", min=0.01,
    **_renamed("MMSEARCH_DEPENDENCY_TIMEOUT_SECONDS", "MMSEARCH_TIMEOUT"),
    help="Seconds to wait for an unreachable server (Milvus, MongoDB).")]
TIMEOUT = 10.0

# `mmsearch experiments report` reads serving's event store under serving's names.
EventsMongoUri = Annotated[str, typer.Option(
    "--mongo-uri", envvar=["MMSEARCH_EVENTS_MONGO_URI", "MMSEARCH_MONGO_URI"],
    help="MongoDB holding serving's events (serving's MMSEARCH_EVENTS_MONGO_URI, else MMSEARCH_MONGO_URI).")]
EventsDatabase = Annotated[str, typer.Option(
    envvar="MMSEARCH_EVENTS_DATABASE", help="Database of the impressions and feedback collections.")]
