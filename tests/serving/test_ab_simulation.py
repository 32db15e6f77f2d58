"""A simulated experiment, end to end: synthetic users with known click-through rates drive real gRPC
Search + Feedback against a real serving; the real ``mmsearch experiments report`` reads what serving
stored and must find the truth.

Scene ``abtest`` (see ``feedback_stack``): layer ``ranking`` (control vs threshold, 50/50 by user id) and
three A/A layers ``aa1..aa3`` (arms ``a``/``b`` that do the same, each bucketed with its own salt). A user
clicks with probability 10% under ``ranking=control`` and 12% under ``ranking=threshold``, whatever the
A/A arms; the clicked rank r is drawn with P(r) proportional to 1/r among the page's items, so the true
MRR of the first click is known too. Some clicks are sent twice (serving must count them once), some are
followed by a dwell event.

Power: 5,000 users x 3 searches = 15,000 impressions, ~7,500 per arm; the pooled z-test at level 0.05
then detects 10% -> 12% with power ~0.98 (one search per user would give ~0.62). The A/A layers are three
experiments with equal CTRs in the same run; that the test's false-positive rate stays at its level over
many seeds is checked on the report's own pipeline in tests/reports/test_experiment_report.py (hundreds of
seeds, which real searches cannot afford).
"""
from __future__ import annotations

import asyncio
import json
import math
import random
import subprocess
import sys
import time

import grpc
import pytest
from pymongo import AsyncMongoClient

from mmsearch.core import events as schema
from mmsearch.v1 import retrieval_pb2, retrieval_pb2_grpc
from tests.support.loops import eventually_async
from tests.support.metrics import sample

pytestmark = pytest.mark.slow

USERS, SEARCHES_PER_USER, CONCURRENCY, SEED = 5000, 3, 16, 20250117
TRUE_CTR = {"control": 0.10, "threshold": 0.12}
REPEAT_CLICK, DWELL = 0.1, 0.3
QUERIES = ["read and write CSV files", "parse a JSON document", "join two filesystem paths",
           "regular expression substitution", "open a sqlite database", "copy a directory tree",
           "compress data with gzip", "read a zip archive", "hash a password", "parse a date string",
           "random sample from a list", "send an HTTP request", "log a warning message",
           "parse command line arguments", "run a subprocess", "open a TCP socket", "start a thread",
           "create a temporary file", "generate a UUID", "base64 encode bytes"]


def reciprocal_rank_mean(n: int) -> float:
    """E[1/r] for r drawn with P(r) proportional to 1/r on 1..n."""
    harmonic = sum(1 / r for r in range(1, n + 1))
    return sum(1 / r ** 2 for r in range(1, n + 1)) / harmonic


def clicks(scene: str, arm: str) -> float:
    return sample("mmsearch_serving_feedback_total", scene=scene, layer="ranking", arm=arm, event="click")


async def simulate(address: str, scene: str) -> dict:
    rng = random.Random(SEED)
    plan = [(f"sim-{u:05d}", rng.choice(QUERIES), rng.random(), rng.random(), rng.random(), rng.random())
            for u in range(USERS) for _ in range(SEARCHES_PER_USER)]
    truth = {"impressions": {arm: 0 for arm in TRUE_CTR}, "mrr": {arm: 0.0 for arm in TRUE_CTR},
             "clicks": 0, "duplicates": 0}
    jobs = iter(plan)
    async with grpc.aio.insecure_channel(address) as channel:
        stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)

        async def user() -> None:
            for user_id, text, u_click, u_rank, u_repeat, u_dwell in jobs:
                response = await stub.Search(retrieval_pb2.SearchRequest(scene=scene, text=text, user_id=user_id),
                                             timeout=30)
                arm = {a.layer: a.arm for a in response.assignments}["ranking"]
                n = len(response.items)
                truth["impressions"][arm] += 1
                truth["mrr"][arm] += TRUE_CTR[arm] * reciprocal_rank_mean(n) if n else 0.0
                if not n or u_click >= TRUE_CTR[arm]:
                    continue
                rank = _draw([1 / r for r in range(1, n + 1)], u_rank)
                click = retrieval_pb2.FeedbackRequest(feedback_token=response.feedback_token,
                                                      item_id=response.items[rank - 1].id,
                                                      event=retrieval_pb2.FEEDBACK_EVENT_CLICK)
                assert not (await stub.Feedback(click, timeout=30)).duplicate
                truth["clicks"] += 1
                if u_repeat < REPEAT_CLICK:
                    assert (await stub.Feedback(click, timeout=30)).duplicate
                    truth["duplicates"] += 1
                if u_dwell < DWELL:
                    await stub.Feedback(retrieval_pb2.FeedbackRequest(
                        feedback_token=response.feedback_token, item_id=response.items[rank - 1].id,
                        event=retrieval_pb2.FEEDBACK_EVENT_DWELL, dwell_seconds=1 + 30 * u_dwell), timeout=30)

        await asyncio.gather(*(user() for _ in range(CONCURRENCY)))
    return truth


def _draw(weights: list[float], u: float) -> int:
    """The 1-based index that ``u`` in [0, 1) falls on when ``weights`` share the interval."""
    total, acc = sum(weights), 0.0
    for i, w in enumerate(weights, 1):
        acc += w / total
        if u < acc:
            return i
    return len(weights)


async def wait_stored(uri: str, database: str, scene: str, expected: int, timeout: float = 120) -> int:
    """Impressions are written by a background drain: wait until all of them are in the store (read with
    the async client: this runs on the test's event loop)."""
    async with AsyncMongoClient(uri) as client:
        collection = client[database][schema.IMPRESSIONS]

        async def all_stored() -> bool:
            return await collection.count_documents({"scene": scene}) >= expected
        await eventually_async(all_stored, f"{expected} impressions of {scene} stored", timeout=timeout, interval=0.5)
        return await collection.count_documents({"scene": scene})


def inside(value: float, interval: list[float]) -> bool:
    return interval[0] <= value <= interval[1]


async def clear_events(uri: str, database: str, scene: str) -> None:
    """Remove the scene's stored events: the session's feedback stack is shared with other tests (e.g.
    tests/serving/test_e2e_feedback.py), whose impressions the report would count too."""
    async with AsyncMongoClient(uri) as client:
        for name in (schema.IMPRESSIONS, schema.FEEDBACK):
            await client[database][name].delete_many({"scene": scene})


async def test_simulated_experiment_finds_the_better_arm_and_no_winner_between_equal_arms(feedback_stack):
    fs = feedback_stack
    await clear_events(fs.events_uri, fs.database, fs.scene)
    before = {arm: clicks(fs.scene, arm) for arm in TRUE_CTR}
    started = time.perf_counter()
    truth = await simulate(fs.address, fs.scene)
    searched_s = time.perf_counter() - started
    total = USERS * SEARCHES_PER_USER
    assert await wait_stored(fs.events_uri, fs.database, fs.scene, total) == total
    result = subprocess.run(
        [sys.executable, "-m", "mmsearch.cli", "experiments", "report", "--scene", fs.scene, "--format", "json",
         "--mongo-uri", fs.events_uri, "--events-database", fs.database, "--mde", "0.01"],
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    layers = {layer["layer"]: layer for layer in report["layers"]}
    print(f"\n{total} searches and {truth['clicks']} clicks ({truth['duplicates']} repeated) in {searched_s:.0f} s")
    for name, layer in layers.items():
        for row in layer["arms"]:
            v = row["vs_default"] or {}
            print(f"{name:8} {row['arm']:10} n={row['impressions']:5} CTR={row['ctr']:.4f} "
                  f"[{row['ctr_ci95'][0]:.4f}, {row['ctr_ci95'][1]:.4f}] MRR={row['mrr']:.4f} "
                  f"p={v.get('p_value', float('nan')):.4f} {v.get('verdict', '(default)')}")

    assert report["impressions"] == total and report["orphan_feedback"] == 0
    ranking = {row["arm"]: row for row in layers["ranking"]["arms"]}
    assert sum(row["impressions"] for row in ranking.values()) == total
    assert sum(row["clicks"] for row in ranking.values()) == truth["clicks"]  # repeats counted once
    for arm, p in TRUE_CTR.items():
        row = ranking[arm]
        assert row["impressions"] == truth["impressions"][arm]
        assert inside(p, row["ctr_ci95"]), (arm, p, row["ctr_ci95"])
        assert inside(truth["mrr"][arm] / truth["impressions"][arm], row["mrr_ci95"]), (arm, row["mrr_ci95"])
    assert layers["ranking"]["default"] == "control" and layers["ranking"]["winner"] == "threshold"
    assert ranking["threshold"]["vs_default"]["verdict"] == "better"
    assert inside(TRUE_CTR["threshold"] - TRUE_CTR["control"], ranking["threshold"]["vs_default"]["ctr_difference_ci"])

    for name in ("aa1", "aa2", "aa3"):  # equal CTRs: no winner
        arms = {row["arm"]: row for row in layers[name]["arms"]}
        assert layers[name]["winner"] is None, layers[name]
        assert arms["b"]["vs_default"]["verdict"] == "no significant difference"
        assert sum(row["impressions"] for row in arms.values()) == total

    # The live counters agree with the report: one count per recorded click, per arm.
    for arm in TRUE_CTR:
        assert clicks(fs.scene, arm) - before[arm] == ranking[arm]["clicks"]
    assert math.isfinite(ranking["threshold"]["vs_default"]["z"])
