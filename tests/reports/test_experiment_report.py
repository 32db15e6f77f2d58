"""The experiment report: its statistics against published values, its false-positive rate over many seeds,
what it counts (randomized impressions only, repeats once, first clicks), its renderings, and
``mmsearch experiments report`` as a real process against a real MongoDB-wire server."""
from __future__ import annotations

import datetime as dt
import json
import random
import subprocess
import sys
import uuid

import numpy as np
import pymongo
import pytest

from mmsearch.reports import ab_stats
from mmsearch.jobs.errors import JobError
from mmsearch.reports.experiment_report import build_report, count, parse_since, render_json, render_markdown
from mmsearch.core import events as schema
from mmsearch.dev.processes import free_port

NOW = dt.datetime(2025, 1, 17, 12, 0, tzinfo=dt.timezone.utc)
ALPHA = 0.05


# ---------------------------------------------------------------- statistics (published values)


def test_wilson_interval_of_10_in_100():
    lo, hi = ab_stats.wilson_interval(10, 100)
    assert (round(lo, 4), round(hi, 4)) == (0.0552, 0.1744)
    assert ab_stats.wilson_interval(0, 50)[0] == 0.0 and ab_stats.wilson_interval(0, 0) is None


def test_newcombe_interval_of_his_worked_example():
    """Newcombe (1998), example (a): 56/70 - 48/80, method 10: 0.0524 to 0.3339."""
    lo, hi = ab_stats.difference_interval(48, 80, 56, 70)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)


def test_two_proportion_z_test_and_sample_size():
    z, p = ab_stats.two_proportion_z_test(100, 1000, 130, 1000)
    assert round(z, 3) == 2.103 and round(p, 4) == 0.0355
    assert ab_stats.two_proportion_z_test(0, 10, 0, 10) == (0.0, 1.0)
    assert ab_stats.sample_size_per_arm(0.10, 0.02) == 3841  # Fleiss without continuity correction
    assert ab_stats.sample_size_per_arm(0.99, 0.02) is None


def test_the_z_test_keeps_its_level_when_the_arms_are_equal():
    """20,000 A/A experiments of 2,500 impressions per arm at 10%: rejections at the test's level (within 3 SE)."""
    rng = np.random.default_rng(17)
    trials, n = 20_000, 2_500
    x1, x2 = rng.binomial(n, 0.10, trials), rng.binomial(n, 0.10, trials)
    rejected = sum(ab_stats.two_proportion_z_test(int(a), n, int(b), n)[1] < ALPHA for a, b in zip(x1, x2))
    assert rejected / trials <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / trials) ** 0.5, rejected / trials


# ---------------------------------------------------------------- counting and the report


def synthetic(rng: random.Random, users: int, ctr: dict[str, float], *, layer: str = "ranking",
              default: str = "control", via: str = "bucket", at: dt.datetime = NOW) -> tuple[list[dict], list[dict]]:
    """Impressions of ``users`` (one each) split evenly over ``ctr``'s arms, and their clicks."""
    arms = sorted(ctr)
    impressions, feedback = [], []
    for u in range(users):
        arm = arms[u % len(arms)]
        iid = f"{uuid.UUID(int=rng.getrandbits(128)).hex}"
        impressions.append(schema.impression_document(
            impression_id=iid, scene="t2t", arm=f"{layer}={arm}", query="text",
            assignments=[(layer, arm, default, via)], item_ids=[1, 2, 3, 4], user=None, at=at))
        if rng.random() < ctr[arm]:
            feedback.append(schema.feedback_document(impression_id=iid, scene="t2t", assignments=[(layer, arm)],
                                                     item_id=2, rank=2, event="click", dwell_seconds=None, at=at))
    return impressions, feedback


def layer_of(report: dict, name: str = "ranking") -> dict:
    return next(layer for layer in report["layers"] if layer["layer"] == name)


def test_equal_arms_call_a_winner_no_more_often_than_the_level_over_many_seeds():
    """The whole pipeline (documents -> counts -> report), 300 seeds of an A/A experiment, 2,000 users each."""
    seeds, winners = 300, 0
    for seed in range(seeds):
        impressions, feedback = synthetic(random.Random(seed), 2000, {"control": 0.10, "other": 0.10})
        report = build_report(count(impressions, feedback), scene="t2t", since=None, now=NOW, alpha=ALPHA)
        winners += layer_of(report)["winner"] is not None
    assert winners / seeds <= ALPHA + 3 * (ALPHA * (1 - ALPHA) / seeds) ** 0.5, winners / seeds


def test_counts_only_randomized_impressions_and_the_first_click_of_each():
    rng = random.Random(1)
    impressions, feedback = synthetic(rng, 400, {"control": 0.5, "fast": 0.5})
    forced, forced_clicks = synthetic(rng, 50, {"fast": 1.0}, via="forced")
    anonymous, _ = synthetic(rng, 30, {"control": 0.0}, via="default")
    target = impressions[0]["_id"]
    later = NOW + dt.timedelta(seconds=5)
    feedback += [  # a second click on another item, later: the first click (rank 1, earlier) is the one for MRR
        schema.feedback_document(impression_id=target, scene="t2t", assignments=[("ranking", "control")], item_id=3,
                                 rank=3, event="click", dwell_seconds=None, at=later),
        schema.feedback_document(impression_id=target, scene="t2t", assignments=[("ranking", "control")], item_id=1,
                                 rank=1, event="click", dwell_seconds=None, at=NOW),
        schema.feedback_document(impression_id=target, scene="t2t", assignments=[("ranking", "control")], item_id=1,
                                 rank=1, event="dwell", dwell_seconds=12.0, at=later),
        schema.feedback_document(impression_id="gone", scene="t2t", assignments=[("ranking", "control")], item_id=1,
                                 rank=1, event="click", dwell_seconds=None, at=later),
    ]
    counts = count(impressions + forced + anonymous, [d for d in feedback if d["_id"] != target + "/2/click"]
                   + forced_clicks)
    report = build_report(counts, scene="t2t", since=None, now=NOW)
    layer = layer_of(report)
    assert layer["excluded"] == {"forced": 50, "default": 30}
    rows = {row["arm"]: row for row in layer["arms"]}
    assert rows["control"]["impressions"] + rows["fast"]["impressions"] == 400
    assert report["orphan_feedback"] == 1 and report["impressions"] == 480
    assert rows["control"]["dwell_mean_seconds"] == 12.0
    single = count([impressions[0]], [d for d in feedback if d["impression"] == target and d["item"] != 2])
    assert single.arms["ranking"]["control"].rr_sum == 1.0 and single.arms["ranking"]["control"].clicks == 2


def test_a_clear_difference_is_called_with_its_sample_size_and_renders():
    impressions, feedback = synthetic(random.Random(5), 8000, {"control": 0.10, "better": 0.14})
    report = build_report(count(impressions, feedback), scene="t2t", since=NOW - dt.timedelta(days=7), now=NOW,
                          mde=0.01)
    layer = layer_of(report)
    assert layer["default"] == "control" and layer["winner"] == "better"
    versus = layer["arms"][1]["vs_default"]
    assert versus["verdict"] == "better" and versus["p_value"] < 1e-6 and versus["ctr_difference_ci"][0] > 0
    assert versus["sample_size_per_arm"] == ab_stats.sample_size_per_arm(layer["arms"][0]["ctr"], 0.01)
    assert versus["still_needed_per_arm"] == max(0, versus["sample_size_per_arm"] - 4000)
    markdown = render_markdown(report)
    assert "## Layer `ranking` (default arm `control`)" in markdown and "**Winner: `better`**" in markdown
    assert "two-proportion z-test" in markdown and "| `better` | 4000 |" in markdown
    assert json.loads(render_json(report))["layers"][0]["winner"] == "better"
    worse = build_report(count(impressions, feedback), scene="t2t", since=None, now=NOW,
                         controls={"ranking": "better"})
    assert layer_of(worse)["default"] == "better" and layer_of(worse)["winner"] == "better"
    assert layer_of(worse)["arms"][1]["vs_default"]["verdict"] == "worse"


def test_bad_flags_name_themselves():
    assert parse_since("7d", NOW) == NOW - dt.timedelta(days=7)
    assert parse_since("2025-01-01", NOW) == dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    with pytest.raises(JobError, match="--since 'yesterday' is neither a duration"):
        parse_since("yesterday", NOW)
    impressions, feedback = synthetic(random.Random(2), 10, {"control": 0.5})
    with pytest.raises(JobError, match=r"--control names layer\(s\) \['nope'\]"):
        build_report(count(impressions, feedback), scene="t2t", since=None, now=NOW, controls={"nope": "a"})
    with pytest.raises(JobError, match="--control ranking=ghost: arm 'ghost' has no impressions"):
        build_report(count(impressions, feedback), scene="t2t", since=None, now=NOW, controls={"ranking": "ghost"})


# ---------------------------------------------------------------- the command


def report_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mmsearch.cli", "experiments", "report", *args],
                          capture_output=True, text=True, timeout=120)


def test_the_command_reads_the_store_and_prints_json_or_markdown(mongo_server):
    database = f"report_{uuid.uuid4().hex[:8]}"
    now = dt.datetime.now(dt.timezone.utc)
    impressions, feedback = synthetic(random.Random(9), 600, {"control": 0.2, "threshold": 0.3}, at=now)
    old, _ = synthetic(random.Random(10), 100, {"control": 0.0}, at=now - dt.timedelta(days=30))
    with pymongo.MongoClient(mongo_server) as client:
        client[database][schema.IMPRESSIONS].insert_many(impressions + old)
        client[database][schema.FEEDBACK].insert_many(feedback)
    base = ["--mongo-uri", mongo_server, "--events-database", database]
    result = report_cli("--scene", "t2t", "--format", "json", *base)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["impressions"] == 700
    recent = report_cli("--scene", "t2t", "--format", "json", "--since", "3650d", *base)
    assert json.loads(recent.stdout)["impressions"] == 700
    markdown = report_cli("--scene", "t2t", "--since", "7d", *base)
    assert markdown.returncode == 0, markdown.stderr
    assert "600 impressions" in markdown.stdout and "| `threshold` | 300 |" in markdown.stdout

    missing = report_cli("--scene", "t2i", *base)
    assert missing.returncode == 1
    assert "no impressions of scene 't2i'" in missing.stderr and "scenes with impressions: ['t2t']" in missing.stderr
    bad = report_cli("--scene", "t2t", "--alpha", "5", *base)
    assert bad.returncode == 1 and "--alpha 5.0 is out of range" in bad.stderr
    bad = report_cli("--scene", "t2t", "--format", "csv", *base)
    assert bad.returncode == 1 and "--format 'csv' is not one of" in bad.stderr
    down = report_cli("--scene", "t2t", "--mongo-uri", f"mongodb://127.0.0.1:{free_port()}", "--timeout", "1")
    assert down.returncode == 1 and down.stderr.startswith("error: cannot reach MongoDB at"), down.stderr


@pytest.mark.parametrize("since", ["99999999999d", "9" * 30 + "w", "800000d"])
def test_a_since_before_the_year_1_is_one_error_line(since):
    """Once an OverflowError traceback."""
    with pytest.raises(JobError, match="reaches back before the year 1"):
        parse_since(since, NOW)
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "experiments", "report", "--scene", "s",
                             "--since", since, "--mongo-uri", f"mongodb://127.0.0.1:{free_port()}", "--timeout", "1"],
                            capture_output=True, text=True, timeout=60)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 1 and len(lines) == 1 and "reaches back before the year 1" in lines[0], result.stderr
