"""``mmsearch experiments report``: what each arm of a scene's experiment layers does for users.

Reads the impressions and feedback serving stored (:mod:`mmsearch.core.events`)
and prints, per layer and arm: impressions, clicks, CTR with its 95% interval,
the MRR of the first click, and the difference to the layer's default arm with
a significance test, plus the impressions per arm still needed to detect a
given minimum detectable effect. ``--format markdown`` (default) or ``json``.

Definitions (the choices the numbers rest on):
- The unit is the impression (one result page). CTR = impressions with at
  least one click / impressions; ``clicks`` counts every recorded click
  (a repeated click on the same item is stored once by serving).
- MRR of the first click = the mean over impressions of 1/rank of the
  earliest click, 0 for an impression without a click (so it moves with both
  CTR and where the click lands); its interval is the normal approximation.
- Only randomized impressions count: a layer's arm assigned by bucketing a
  user id (``via = bucket``). Requests without a user id (always the default
  arm) and forced arms would bias the comparison; they are counted apart as
  ``excluded``. Layers are analysed one at a time (the marginal of each arm
  over the other layers, which are bucketed independently).
- The test: two-sided two-proportion z-test with pooled variance on CTR, each
  non-default arm against the default arm, at ``--alpha`` divided by the
  number of non-default arms (Bonferroni). Its interval for the difference is
  Newcombe's. It treats impressions as independent trials; when a few users
  make many of the impressions, it is optimistic.
- The default arm of a layer is the one serving recorded with the impressions
  (the config's ``default``, else its first arm); ``--control LAYER=ARM``
  compares against another arm instead.
- Sample size: per arm, for the z-test at ``--alpha`` (Bonferroni-adjusted)
  and ``--power`` to detect an absolute CTR change of ``--mde`` from the
  default arm's CTR; "still needed" subtracts what the smaller of the two arms
  has. A winner is the best arm significantly better than the default; the
  default wins when every other arm is significantly worse.
- Offline figures (recall/nDCG of each arm on a labelled query set) are not
  part of this report yet.
"""
from __future__ import annotations

import datetime as dt
import json
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from mmsearch.reports import ab_stats
from mmsearch.jobs.errors import JobError
from mmsearch.core import events as schema

TEST_NAME = "two-sided two-proportion z-test (pooled variance) on CTR per impression, Bonferroni over the layer's arms"
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_since(value: str | None, now: dt.datetime) -> dt.datetime | None:
    """``7d``, ``12h``, ``30m``, ``45s``, ``2w`` before ``now``, or an ISO date/time (UTC unless it says); None: all."""
    if not value:
        return None
    match = _DURATION.match(value.strip())
    if match:
        try:
            return now - dt.timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        except OverflowError:  # beyond timedelta's range, or before year 1
            raise JobError(f"--since {value!r} reaches back before the year 1: give a shorter duration, or leave "
                           "--since out for every stored impression") from None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise JobError(f"--since {value!r} is neither a duration (7d, 12h, 30m, 45s, 2w) nor an ISO date or time "
                       "(2025-01-31, 2025-01-31T12:00:00+00:00)") from None
    return when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)


def parse_controls(values: Iterable[str]) -> dict[str, str]:
    """``LAYER=ARM`` flags -> {layer: arm}."""
    out = {}
    for value in values:
        layer, sep, arm = value.partition("=")
        if not sep or not layer or not arm:
            raise JobError(f"--control {value!r} is not LAYER=ARM (e.g. --control ranking=control)")
        out[layer] = arm
    return out


# ---------------------------------------------------------------- counting (pure)


@dataclass
class Engagement:
    """Clicks, dwell times and skips: of one impression (:class:`PageOutcome`) or summed over an arm."""

    clicks: int = 0
    dwell_sum: float = 0.0
    dwells: int = 0
    skips: int = 0


@dataclass
class ArmCounts(Engagement):
    impressions: int = 0
    clicked: int = 0          # impressions with at least one click
    rr_sum: float = 0.0       # sum over impressions of 1/rank of the first click (0 without one)
    rr_sq: float = 0.0


@dataclass
class PageOutcome(Engagement):
    """What came back for one impression."""

    first_click_at: Any = None
    first_click_rank: int = 0


@dataclass
class Counts:
    arms: dict[str, dict[str, ArmCounts]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(ArmCounts)))
    defaults: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    excluded: dict[str, Counter] = field(default_factory=lambda: defaultdict(Counter))
    impressions: int = 0
    orphan_feedback: int = 0  # feedback whose impression is not among those read (dropped, or before --since)


def outcomes(feedback: Iterable[Mapping]) -> dict[str, PageOutcome]:
    """Feedback documents -> the outcome of each impression they belong to."""
    pages: dict[str, PageOutcome] = defaultdict(PageOutcome)
    for doc in feedback:
        page = pages[doc["impression"]]
        event = doc.get("event")
        if event == "click":
            page.clicks += 1
            at = doc.get(schema.TIME_FIELD)
            if page.clicks == 1 or (at is not None and page.first_click_at is not None and at < page.first_click_at):
                page.first_click_at, page.first_click_rank = at, int(doc["rank"])
        elif event == "dwell":
            page.dwell_sum += float(doc.get("dwell_seconds") or 0.0)
            page.dwells += 1
        elif event == "skip":
            page.skips += 1
    return pages


def count(impressions: Iterable[Mapping], feedback: Iterable[Mapping]) -> Counts:
    """Impression and feedback documents -> counts per layer and arm (see module doc). Pure."""
    pages = outcomes(feedback)
    counts = Counts()
    seen = 0
    for doc in impressions:
        counts.impressions += 1
        page = pages.get(doc["_id"])
        if page is not None:
            seen += 1
        for a in doc.get("assignments", ()):
            layer, arm = a["layer"], a["arm"]
            if a.get("via") != "bucket":
                counts.excluded[layer][a.get("via") or "unknown"] += 1
                continue
            counts.defaults[layer][a.get("default") or ""] += 1
            c = counts.arms[layer][arm]
            c.impressions += 1
            if page is None:
                continue
            if page.clicks:
                rr = 1.0 / page.first_click_rank
                c.clicked += 1
                c.clicks += page.clicks
                c.rr_sum += rr
                c.rr_sq += rr * rr
            c.dwell_sum += page.dwell_sum
            c.dwells += page.dwells
            c.skips += page.skips
    counts.orphan_feedback = len(pages) - seen
    return counts


# ---------------------------------------------------------------- the report (pure)


def _interval(value: tuple[float, float] | None) -> list[float] | None:
    return [value[0], value[1]] if value is not None else None


def _arm_row(name: str, c: ArmCounts, is_default: bool) -> dict[str, Any]:
    n = c.impressions
    return {
        "arm": name, "default": is_default, "impressions": n, "clicked_impressions": c.clicked, "clicks": c.clicks,
        "ctr": c.clicked / n if n else None, "ctr_ci95": _interval(ab_stats.wilson_interval(c.clicked, n)),
        "mrr": c.rr_sum / n if n else None, "mrr_ci95": _interval(ab_stats.mean_interval(c.rr_sum, c.rr_sq, n)),
        "dwell_mean_seconds": c.dwell_sum / c.dwells if c.dwells else None, "skips": c.skips, "vs_default": None,
    }


def _versus(base: ArmCounts, arm: ArmCounts, alpha: float, power: float, mde: float) -> dict[str, Any]:
    z, p = ab_stats.two_proportion_z_test(base.clicked, base.impressions, arm.clicked, arm.impressions)
    diff = (arm.clicked / arm.impressions - base.clicked / base.impressions
            if arm.impressions and base.impressions else None)
    base_ctr = base.clicked / base.impressions if base.impressions else None
    significant = p < alpha and diff is not None
    needed = ab_stats.sample_size_per_arm(base_ctr, mde, alpha, power) if base_ctr is not None else None
    return {
        "ctr_difference": diff,
        "ctr_difference_ci": _interval(ab_stats.difference_interval(
            base.clicked, base.impressions, arm.clicked, arm.impressions, 1 - alpha)),
        "relative_ctr_change": diff / base_ctr if diff is not None and base_ctr else None,
        "mrr_difference": (arm.rr_sum / arm.impressions - base.rr_sum / base.impressions
                           if arm.impressions and base.impressions else None),
        "z": z, "p_value": p, "significant": significant,
        "verdict": ("better" if diff > 0 else "worse") if significant else "no significant difference",
        "sample_size_per_arm": needed,
        "still_needed_per_arm": (max(0, needed - min(base.impressions, arm.impressions))
                                 if needed is not None else None),
    }


def build_report(counts: Counts, *, scene: str, since: dt.datetime | None, now: dt.datetime, alpha: float = 0.05,
                 power: float = 0.8, mde: float = 0.01, controls: Mapping[str, str] | None = None) -> dict[str, Any]:
    """The report as a JSON-ready dict (see module doc). Pure."""
    controls = dict(controls or {})
    unknown = sorted(set(controls) - set(counts.arms))
    if unknown:
        raise JobError(f"--control names layer(s) {unknown} without randomized impressions in scene {scene!r}; "
                       f"its layers are {sorted(counts.arms)}")
    layers = []
    for layer in sorted(counts.arms):
        arms = counts.arms[layer]
        default = controls.get(layer) or counts.defaults[layer].most_common(1)[0][0]
        if default not in arms:
            if layer in controls:
                raise JobError(f"--control {layer}={default}: arm {default!r} has no impressions in layer "
                               f"{layer!r}; its arms are {sorted(arms)}")
            arms[default] = ArmCounts()
        others = [a for a in sorted(arms) if a != default]
        level = alpha / max(1, len(others))
        rows = [_arm_row(default, arms[default], True)]
        for name in others:
            row = _arm_row(name, arms[name], False)
            row["vs_default"] = _versus(arms[default], arms[name], level, power, mde)
            rows.append(row)
        versus = [r for r in rows if r["vs_default"]]
        better = [r for r in versus if r["vs_default"]["verdict"] == "better"]
        if better:
            winner = max(better, key=lambda r: r["ctr"])["arm"]
        elif versus and all(r["vs_default"]["verdict"] == "worse" for r in versus):
            winner = default
        else:
            winner = None
        layers.append({"layer": layer, "default": default, "alpha": level, "winner": winner,
                       "defaults_seen": dict(counts.defaults[layer]), "excluded": dict(counts.excluded[layer]),
                       "arms": rows})
    for layer, excluded in sorted(counts.excluded.items()):
        if layer not in counts.arms:
            layers.append({"layer": layer, "default": None, "alpha": alpha, "winner": None, "defaults_seen": {},
                           "excluded": dict(excluded), "arms": []})
    return {
        "scene": scene, "since": since.isoformat() if since else None, "until": now.isoformat(),
        "test": TEST_NAME, "alpha": alpha, "power": power, "mde": mde,
        "impressions": counts.impressions, "orphan_feedback": counts.orphan_feedback, "layers": layers,
    }


def _pct(value: float | None, digits: int = 2) -> str:
    return "–" if value is None else f"{value * 100:.{digits}f}%"


def _num(value: float | None, digits: int = 4) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _p(value: float) -> str:
    return "<0.0001" if value < 0.0001 else f"{value:.4f}"


def _span(interval: list[float] | None, fmt) -> str:
    return "" if interval is None else f" [{fmt(interval[0])}, {fmt(interval[1])}]"


def render_markdown(report: Mapping[str, Any]) -> str:
    """The report as Markdown: a header, then one table per layer and its verdict."""
    since = report["since"] or "the first stored impression"
    lines = [f"# Experiment report: scene `{report['scene']}`", "",
             f"{report['impressions']} impressions from {since} to {report['until']}. "
             f"Test: {report['test']}, alpha {report['alpha']}; sample sizes for an absolute CTR change of "
             f"{_pct(report['mde'])} at power {report['power']}."]
    if report["orphan_feedback"]:
        lines.append(f"{report['orphan_feedback']} impressions with feedback were not found among the impressions "
                     "read (dropped by serving, or older than --since); their feedback is not counted.")
    if not report["layers"]:
        lines += ["", "No layer has impressions in this window."]
    for layer in report["layers"]:
        excluded = ", ".join(f"{n} {via}" for via, n in sorted(layer["excluded"].items()))
        lines += ["", f"## Layer `{layer['layer']}` (default arm `{layer['default']}`)", ""]
        if excluded:
            lines += [f"Not randomized, so not compared: {excluded} impressions.", ""]
        if not layer["arms"]:
            continue
        lines += ["| arm | impressions | clicks | CTR [95% CI] | MRR first click [95% CI] | Δ CTR vs default "
                  f"[{(1 - layer['alpha']) * 100:.1f}% CI] | p | verdict | impressions/arm still needed for Δ "
                  f"{_pct(report['mde'])} |",
                  "|---|---:|---:|---|---|---|---:|---|---:|"]
        for row in layer["arms"]:
            v = row["vs_default"]
            name = f"`{row['arm']}`" + (" (default)" if row["default"] else "")
            ctr = _pct(row["ctr"]) + _span(row["ctr_ci95"], _pct)
            mrr = _num(row["mrr"]) + _span(row["mrr_ci95"], _num)
            if v is None:
                lines.append(f"| {name} | {row['impressions']} | {row['clicks']} | {ctr} | {mrr} | | | | |")
                continue
            diff = _pct(v["ctr_difference"]) + _span(v["ctr_difference_ci"], _pct)
            still = "–" if v["still_needed_per_arm"] is None else str(v["still_needed_per_arm"])
            lines.append(f"| {name} | {row['impressions']} | {row['clicks']} | {ctr} | {mrr} | {diff} | "
                         f"{_p(v['p_value'])} | {v['verdict']} | {still} |")
        lines += ["", f"**Winner: `{layer['winner']}`**" if layer["winner"] else
                  "**No winner yet** (no arm differs significantly from the default)."]
    return "\n".join(lines) + "\n"


def render_json(report: Mapping[str, Any]) -> str:
    def clean(value):
        if isinstance(value, float) and not math.isfinite(value):
            return None
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return json.dumps(clean(report), indent=2) + "\n"


# ---------------------------------------------------------------- reading the store


def read_events(db, scene: str, since: dt.datetime | None) -> tuple[Iterable[dict], list[dict]]:
    """(a cursor over the impressions of ``scene`` since ``since``, their feedback); JobError when there are none."""
    where: dict[str, Any] = {"scene": scene}
    if since is not None:
        where[schema.TIME_FIELD] = {"$gte": since}
    if db[schema.IMPRESSIONS].find_one(where, {"_id": 1}) is None:
        scenes = sorted(db[schema.IMPRESSIONS].distinct("scene"))
        raise JobError(f"no impressions of scene {scene!r} since {since.isoformat() if since else 'ever'} in "
                       f"database {db.name!r}; scenes with impressions: {scenes or 'none yet'}")
    feedback = list(db[schema.FEEDBACK].find(where, {"impression": 1, "event": 1, "rank": 1, "dwell_seconds": 1,
                                                     schema.TIME_FIELD: 1}))
    return db[schema.IMPRESSIONS].find(where, {"assignments": 1}, batch_size=5000), feedback


def report(*, scene: str, mongo_uri: str, database: str, since: str | None, alpha: float, power: float, mde: float,
           controls: Iterable[str] = (), output_format: str = "markdown", timeout: float = 10.0,
           now: dt.datetime | None = None) -> str:
    """Read the events and render the report; :class:`JobError` on bad flags or an unreachable store."""
    import pymongo

    from mmsearch.jobs.push_mongo import connect, redact

    for flag, value in (("--alpha", alpha), ("--power", power), ("--mde", mde)):
        if not 0 < value < 1:
            raise JobError(f"{flag} {value} is out of range: give a number between 0 and 1 (exclusive)")
    if output_format not in ("markdown", "json"):
        raise JobError(f"--format {output_format!r} is not one of: markdown, json")
    now = now or dt.datetime.now(dt.timezone.utc)
    start = parse_since(since, now)
    wanted = parse_controls(controls)
    client = connect(mongo_uri, timeout)
    try:
        impressions, feedback = read_events(client[database], scene, start)
        counts = count(impressions, feedback)
    except pymongo.errors.PyMongoError as exc:
        raise JobError(f"cannot read the events in database {database!r} at {redact(mongo_uri)}: {exc}") from None
    finally:
        client.close()
    result = build_report(counts, scene=scene, since=start, now=now, alpha=alpha, power=power, mde=mde,
                          controls=wanted)
    return render_json(result) if output_format == "json" else render_markdown(result)
