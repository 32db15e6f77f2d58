"""``mmsearch serve writer``: start the DocumentService (live writes).

The port is bound with health NOT_SERVING; the writer connects to Milvus and
MongoDB, then repairs every configured scene (re-applies the writes its log
left pending: a process killed mid-batch, a store that failed) and only then
reports SERVING. A repair loop repeats that every
``MMSEARCH_WRITER_REPAIR_INTERVAL_SECONDS``, so a batch a store refused half-way
is completed once the store is back.

Where it runs: its own process and Deployment, never inside serving: a write
encodes with the document tower (CLIP's image tower for images), CPU that
searches must not pay for, and serving never imports the Milvus write side
(the import contract in pyproject.toml). One replica: writes to a scene are
ordered by one process (docs/writes.md).
"""
from __future__ import annotations

import asyncio
import logging
import os

from mmsearch.core.access.keyring import KeyRing
from mmsearch.core.logs import setup_logging
from mmsearch.core.milvus.connection import connect as milvus_connect
from mmsearch.core.settings import load_settings
from mmsearch.services.runtime import tracing
from mmsearch.services.runtime.access import AccessInterceptor
from mmsearch.services.runtime.server import RunningServer, run_until_signal, start_server
from mmsearch.services.writer.service import ACCESS_RULES, DocumentServicer, register
from mmsearch.services.writer.settings import WriterSettings
from mmsearch.services.writer.writes import Writer

log = logging.getLogger(__name__)


def open_stores(settings: WriterSettings):
    import pymongo

    timeout = settings.dependency_timeout_seconds
    milvus = milvus_connect(settings.milvus_uri, token=settings.milvus_token, timeout=timeout)
    mongo = pymongo.MongoClient(settings.mongo_uri, serverSelectionTimeoutMS=int(timeout * 1000),
                                connectTimeoutMS=int(timeout * 1000))
    return milvus, mongo


def repair_all(writer: Writer) -> dict[str, int]:
    done = {}
    for scene in writer.settings.writer_scenes:
        try:
            done[scene] = writer.repair(scene)
        except Exception as exc:  # no live version yet, a store down: the loop tries again
            log.warning("repair of scene %s not done: %s", scene, exc)
    return done


async def repair_loop(writer: Writer, interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        await asyncio.to_thread(repair_all, writer)


async def start(settings: WriterSettings) -> RunningServer:
    """Bind (NOT_SERVING), repair every scene, then SERVING. Used by ``main`` and by tests."""
    milvus, mongo = await asyncio.to_thread(open_stores, settings)
    writer = Writer(settings, milvus, mongo)
    await asyncio.to_thread(writer.log.ensure_indexes)
    servicer = DocumentServicer(writer, settings)
    access = settings.access
    gate = AccessInterceptor(KeyRing(access.api_keys_file), access.anonymous, ACCESS_RULES)
    running = await start_server(settings, register(servicer), serving=False, interceptors=[gate])
    repaired = await asyncio.to_thread(repair_all, writer)
    loop = asyncio.create_task(repair_loop(writer, settings.writes.repair_interval_seconds), name="writer-repair")

    async def stop() -> None:
        loop.cancel()
        await asyncio.gather(loop, return_exceptions=True)
        writer.close()
        mongo.close()
        milvus.close()

    running.on_stop.append(stop)
    await running.set_serving(True)
    log.info("write logs repaired: SERVING", extra={"repaired": repaired, "scenes": sorted(settings.writer_scenes)})
    return running


async def serve(settings: WriterSettings) -> None:
    running = await start(settings)
    await run_until_signal(running, settings.grace_seconds)


def main() -> None:
    settings = load_settings(WriterSettings)
    setup_logging(settings.log_level, settings.log_json)
    os.nice(settings.writes.nice)  # before any thread starts: every thread of the writer runs at it
    tracing.configure("mmsearch-writer")  # on only when the OTEL_* variables say so
    asyncio.run(serve(settings))
