"""Hostile load on the web API: no 5xx under a mix of every arm and the inputs that once failed (figures, not a test).

Starts the demo stack as bench/web.py does (embedded document store,
preprocess, serving and web as real processes on 127.0.0.1 only; the small
stdlib index under data/bench, built on first run and reused), then drives
``--clients`` concurrent HTTP clients against web:

- baseline: ``--baseline-seconds`` of plain text searches (no user: the
  default arms), the same clients, the same client;
- hostile: ``--seconds`` of a fixed rotation over :data:`KINDS`: users spread
  over both A/B layers (control, MMR, hybrid, dense), ``diversify=true`` (MMR
  on every arm), filters that match nothing (MMR included), punctuation-only,
  emoji, zero-width, stop-word and unknown-word queries, CJK queries up to 950
  characters (within the 1,000-character limit, ~8.5 KB percent-encoded),
  1,000-character English queries (both at the tokenizer's 256-token cap),
  next pages (a ``page_token`` of an earlier answer), more like this (also
  with a filter that matches nothing), and feedback (click, dwell and skip on
  an earlier page's first item, and bodies that once gave 500: an ``item_id``
  of ``"²"``, an ``event`` list).

Bounded: each phase stops at its seconds or at ``--max-requests`` requests,
whichever comes first, and every request has a client timeout. The feedback
rate limit is raised for the run (MMSEARCH_FEEDBACK_RATE_PER_SECOND/BURST) so
feedback reaches serving and the store instead of stopping at 429.

Prints the count of responses by status (and by kind for anything but 200),
p50/p99 of both phases and their ratio (hostile / baseline), the error bodies
that lack the JSON shape or a request id, and the 5xx count, which must be 0
(exit status 1 otherwise, with the first 5xx bodies).

Run: ``.venv/bin/python bench/hostile_load.py [--seconds 60] [--clients 32]``
(``BENCH_MODULES``: the stdlib modules of the index, as bench/web.py).
"""
from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable

import aiohttp

# bench/ is the script's folder, so its sibling benchmarks import by name: the stack and the percentile.
from web import QUERIES, bench_stack, percentile  # noqa: E402  (web also puts the repo on sys.path)

CJK = "检索多模态语义搜索引擎的查询文本"
Request = tuple[str, str, dict[str, Any]]  # method, path, params (GET) or JSON body (POST)


@dataclass
class Seen:
    """What earlier answers gave: next pages (the search's parameters with its page token), (feedback token,
    item id) pairs and item ids."""

    next_pages: list[dict[str, Any]] = field(default_factory=list)
    pages: list[tuple[str, int]] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)

    def keep(self, params: dict[str, Any], body: dict) -> None:
        token = body.get("next_page_token")
        for bucket, value in ((self.next_pages, token and {**params, "page_token": token}),
                              (self.pages, body.get("items") and (body["feedback_token"], body["items"][0]["id"])),
                              (self.ids, body.get("items") and body["items"][0]["id"])):
            if value:
                bucket.append(value)
                del bucket[:-256]  # the latest answers only


def _search(scene: str, **params: Any) -> Request:
    return "GET", "api/search", {"scene": scene, **params}


def _feedback(seen: Seen, event: str, **override: Any) -> Request:
    token, item = random.choice(seen.pages) if seen.pages else ("v1.none", 0)
    body = {"feedback_token": token, "item_id": item, "event": event, **override}
    if event == "dwell" and "dwell_seconds" not in override:
        body["dwell_seconds"] = 3.5
    return "POST", "api/feedback", body


def _user() -> str:
    return f"u{random.randrange(64)}"  # 64 users spread over both layers' arms


KINDS: dict[str, Callable[[str, Seen], Request]] = {
    "plain": lambda s, _: _search(s, q=random.choice(QUERIES)),
    "every arm": lambda s, _: _search(s, q=random.choice(QUERIES), user=_user()),
    "diversify": lambda s, _: _search(s, q=random.choice(QUERIES), user=_user(), diversify="true"),
    "no match filter": lambda s, _: _search(s, q=random.choice(QUERIES), user=_user(), filter="category:nosuch"),
    "no match diversify": lambda s, _: _search(s, q="read a file", diversify="true", filter="category:nosuch"),
    "punctuation": lambda s, _: _search(s, q=random.choice(["?!", "...", "#$%&*", "()[]{}"]), user=_user()),
    "emoji": lambda s, _: _search(s, q="\U0001f600\U0001f389" * random.randint(1, 20), user=_user()),
    "zero width": lambda s, _: _search(s, q="\u200b\u200d\ufeff", user=_user(), diversify="true"),
    "stop words": lambda s, _: _search(s, q="the of and", user=_user()),
    "unknown word": lambda s, _: _search(s, q="xyzzyplugh", user=_user(), diversify="true"),
    "cjk": lambda s, _: _search(s, q=CJK[:random.randint(2, len(CJK))], user=_user()),
    "cjk 950": lambda s, _: _search(s, q=(CJK * 60)[:950], user=_user()),
    "long text": lambda s, _: _search(s, q=(" ".join(QUERIES) * 10)[:1000], user=_user()),  # 256 tokens, the cap
    "next page": lambda s, seen: ("GET", "api/search", random.choice(seen.next_pages)) if seen.next_pages
    else _search(s, q=random.choice(QUERIES), k="3"),
    "similar": lambda s, seen: ("GET", "api/similar", {"scene": s, "id": random.choice(seen.ids) if seen.ids else 0,
                                                      "user": _user()}),
    "similar no match": lambda s, seen: ("GET", "api/similar", {"scene": s, "id": seen.ids[-1] if seen.ids else 0,
                                                                "filter": "category:nosuch", "diversify": "true"}),
    "feedback": lambda _, seen: _feedback(seen, random.choice(["click", "dwell", "skip"])),
    "feedback hostile": lambda _, seen: _feedback(seen, random.choice(["click", ["click"], {"e": 1}]),
                                                  **random.choice([{"item_id": "\u00b2"}, {}])),
}


@dataclass
class Outcome:
    kind: str
    status: int
    ms: float
    body: str = ""


def _error_shape_ok(response_headers, text: str) -> bool:
    """An error answer is the API's JSON error with the request id of its X-Request-Id header."""
    try:
        error = json.loads(text)["error"]
    except (ValueError, KeyError, TypeError):
        return False
    return isinstance(error, dict) and error.get("request_id") == response_headers.get("X-Request-Id")


async def drive(url: str, scene: str, kinds: list[str], clients: int, seconds: float,
                max_requests: int) -> tuple[list[Outcome], int]:
    """Outcomes of ``clients`` workers cycling through ``kinds`` for ``seconds`` or ``max_requests`` requests,
    and the count of error answers not in the API's JSON error shape."""
    seen, outcomes, misshapen = Seen(), [], 0
    deadline = time.monotonic() + seconds
    budget = iter(range(max_requests))
    rotation = itertools.cycle(kinds)
    timeout = aiohttp.ClientTimeout(total=30)

    async def worker(http: aiohttp.ClientSession) -> None:
        nonlocal misshapen
        for _ in budget:
            if time.monotonic() >= deadline:
                return
            kind = next(rotation)
            method, path, params = KINDS[kind](scene, seen)
            start = time.perf_counter()
            try:
                if method == "GET":
                    call = http.get(url + path, params=params)
                else:
                    call = http.post(url + path, data=json.dumps(params), headers={"Content-Type": "text/plain"})
                async with call as response:
                    text = await response.text()
                    status, headers = response.status, response.headers
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                status, headers, text = 599, {}, f"client: {type(exc).__name__}: {exc}"  # no answer: counted as 5xx
            ms = (time.perf_counter() - start) * 1000
            outcomes.append(Outcome(kind, status, ms, text[:300] if status >= 500 else ""))
            if status == 200 and path == "api/search":
                seen.keep(params, json.loads(text))
            elif 400 <= status < 599 and not _error_shape_ok(headers, text):
                misshapen += 1

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=clients), timeout=timeout) as http:
        await asyncio.gather(*(worker(http) for _ in range(clients)))
    return outcomes, misshapen


def _latency(outcomes: list[Outcome]) -> tuple[float, float]:
    ms = [o.ms for o in outcomes]
    return statistics.median(ms), percentile(ms, 0.99)


def report(baseline: list[Outcome], hostile: list[Outcome], misshapen: int, seconds: tuple[float, float],
           clients: int) -> int:
    """Print the figures; the number of 5xx answers of the hostile phase."""
    print(f"\nhostile load: {clients} clients, {os.cpu_count()} cores (client and services share them)")
    print(f"{'phase':<10}{'requests':>10}{'req/s':>9}{'p50 ms':>10}{'p99 ms':>10}")
    for name, outcomes, wall in (("baseline", baseline, seconds[0]), ("hostile", hostile, seconds[1])):
        p50, p99 = _latency(outcomes)
        print(f"{name:<10}{len(outcomes):>10}{len(outcomes) / wall:>9.0f}{p50:>10.1f}{p99:>10.1f}")
    (b50, b99), (h50, h99) = _latency(baseline), _latency(hostile)
    print(f"ratio hostile / baseline: p50 {h50 / b50:.2f}x, p99 {h99 / b99:.2f}x")
    print("\nresponses by status:", dict(sorted(Counter(o.status for o in hostile).items())))
    by_kind = Counter((o.kind, o.status) for o in hostile if o.status != 200)
    for (kind, status), count in sorted(by_kind.items()):
        print(f"  {status} {kind}: {count}")
    kinds = Counter(o.kind for o in hostile)
    print("requests by kind:", ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
    print(f"error answers not in the JSON error shape with a request id: {misshapen}")
    failed = [o for o in hostile + baseline if o.status >= 500]
    print(f"5xx: {len(failed)} (must be 0)")
    for o in failed[:5]:
        print(f"  {o.status} {o.kind}: {o.body}")
    return len(failed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0, help="length of the hostile phase")
    parser.add_argument("--baseline-seconds", type=float, default=15.0, help="length of the plain-search phase")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--max-requests", type=int, default=100_000, help="bound on each phase's requests")
    parser.add_argument("--skip", action="append", default=[], choices=sorted(KINDS), metavar="KIND",
                        help="leave this kind out of the hostile mix (repeatable), to find which one hurts")
    args = parser.parse_args()
    os.environ.update({"MMSEARCH_FEEDBACK_RATE_PER_SECOND": "10000", "MMSEARCH_FEEDBACK_BURST": "10000"})
    with bench_stack() as (p, _):
        assert p.host == "127.0.0.1", "the bench talks to loopback only"
        asyncio.run(drive(p.url, p.scene, ["plain"], args.clients, 3, 200))  # warm-up: connections, models
        start = time.monotonic()
        baseline, _ = asyncio.run(drive(p.url, p.scene, ["plain"], args.clients, args.baseline_seconds,
                                        args.max_requests))
        middle = time.monotonic()
        kinds = [k for k in KINDS if k not in args.skip]
        hostile, misshapen = asyncio.run(drive(p.url, p.scene, kinds, args.clients, args.seconds, args.max_requests))
        walls = (middle - start, time.monotonic() - middle)
    raise SystemExit(1 if report(baseline, hostile, misshapen, walls, args.clients) else 0)


if __name__ == "__main__":
    main()
