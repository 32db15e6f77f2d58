"""Benchmark of the web hop (figures and ratios, not a test).

Starts the demo stack (embedded document store, preprocess, serving, web as
real processes on 127.0.0.1; a small stdlib index under data/bench, built on
first run and reused) and measures, in the same run and with the same
queries, end-to-end latency of:
- gRPC ``Search`` sent straight to serving (the baseline), and
- ``GET /api/search`` on the web service (which makes that same gRPC call),
at concurrency 1 and 32. Target: the web hop adds under 20% to p50.
The rounds alternate (gRPC, HTTP, gRPC, HTTP) so drift hits both sides.
Note the client runs on the same machine as the services.

Run: ``.venv/bin/python bench/web.py`` (``BENCH_REQUESTS`` per round, default 400).
"""
from __future__ import annotations

import asyncio
import os
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import aiohttp  # noqa: E402
import grpc  # noqa: E402

from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc  # noqa: E402
from mmsearch.dev.demo import running  # noqa: E402
from mmsearch.dev.demo_plan import DemoPlan, DemoSettings, default_model, plan, resolve_ports  # noqa: E402

MODULES = "json,csv,os,re,collections,itertools,functools,pathlib,asyncio,datetime,subprocess,logging"
QUERIES = [
    "parse a JSON string", "read a CSV file", "join two paths", "regular expression match",
    "count items in a list", "run a command in a subprocess", "current date and time",
    "log a warning message", "iterate over pairs", "cache a function result", "list files in a folder",
    "sleep in a coroutine", "ordered dictionary", "split a string by a pattern", "environment variables",
    "write rows to a spreadsheet file",
]
REQUESTS = int(os.environ.get("BENCH_REQUESTS", "400"))


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def drive(call, concurrency: int, total: int) -> list[float]:
    """Latencies (ms) of ``total`` calls issued by ``concurrency`` workers."""
    latencies: list[float] = []
    counter = iter(range(total))

    async def worker():
        for i in counter:
            start = time.perf_counter()
            await call(QUERIES[i % len(QUERIES)])
            latencies.append((time.perf_counter() - start) * 1000)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies


async def measure(serving: str, web_url: str, scene: str) -> dict[tuple[str, int], list[float]]:
    results: dict[tuple[str, int], list[float]] = {}
    async with grpc.aio.insecure_channel(serving) as channel, aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=64)
    ) as http:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

        async def via_grpc(q: str) -> None:
            await stub.Search(retrieval_pb2.SearchRequest(scene=scene, text=q, top_k=10), timeout=10)

        async def via_http(q: str) -> None:
            async with http.get(f"{web_url}api/search", params={"scene": scene, "q": q, "k": "10"}) as response:
                if response.status != 200:
                    raise RuntimeError(f"HTTP {response.status}: {await response.text()}")
                await response.read()

        calls = {"grpc": via_grpc, "http": via_http}
        for name, call in calls.items():  # warm-up: connections, onnxruntime, Milvus
            await drive(call, 8, 64)
        for concurrency in (1, 32):
            for _ in range(2):
                for name, call in calls.items():
                    results.setdefault((name, concurrency), []).extend(
                        await drive(call, concurrency, REQUESTS // 2))
    return results


@contextmanager
def bench_stack() -> Iterator[tuple[DemoPlan, str]]:
    """The demo stack on free ports of 127.0.0.1 over the bench index (data/bench, built on first run):
    its plan and serving's gRPC address, until the block ends."""
    settings = DemoSettings(data_dir=ROOT / "data" / "bench", web_port=0, serving_port=0, preprocess_port=0,
                            mongo_port=0, source=os.environ.get("BENCH_MODULES", MODULES), log_level="WARNING")
    p = plan(settings, resolve_ports(settings), model=default_model())
    serving = next(s for s in p.services if s.name == "serving").ready.removeprefix("grpc://")
    with running(p, settings.startup_timeout_seconds):
        yield p, serving


def main() -> None:
    with bench_stack() as (p, serving):
        results = asyncio.run(measure(serving, p.url, p.scene))
    print(f"\nweb hop benchmark: scene {p.scene}, {REQUESTS} requests per cell, {os.cpu_count()} cores "
          "(client and services share them)")
    print(f"{'path':<22}{'conc':>5}{'p50 ms':>10}{'p99 ms':>10}{'mean ms':>10}{'req/s':>10}")
    for concurrency in (1, 32):
        for name, label in (("grpc", "gRPC Search (serving)"), ("http", "HTTP /api/search (web)")):
            samples = results[(name, concurrency)]
            rate = concurrency * 1000 / statistics.mean(samples)
            print(f"{label:<22}{concurrency:>5}{statistics.median(samples):>10.2f}"
                  f"{percentile(samples, 0.99):>10.2f}{statistics.mean(samples):>10.2f}{rate:>10.0f}")
        g, h = statistics.median(results[("grpc", concurrency)]), statistics.median(results[("http", concurrency)])
        verdict = "meets" if h / g - 1 < 0.20 else "misses"
        print(f"  concurrency {concurrency}: web adds {100 * (h / g - 1):+.1f}% to p50 "
              f"({h - g:+.2f} ms; {verdict} the < 20% target)")


if __name__ == "__main__":
    main()
