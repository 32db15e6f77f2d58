"""Cron expressions as a Kubernetes CronJob reads them: five fields, in UTC (pure functions).

``minute hour day-of-month month day-of-week``, each ``*``, a number, a
range ``a-b``, a step ``*/n`` or ``a-b/n``, or a comma list of those; month
and weekday names (``jan``, ``mon``; case-insensitive); weekday 7 is Sunday
like 0; ``?`` means ``*``; the macros ``@yearly`` (``@annually``),
``@monthly``, ``@weekly``, ``@daily`` (``@midnight``) and ``@hourly``. As in
Vixie cron, when both day fields are restricted a day matches either.
Times are UTC (a CronJob's default without ``timeZone``).
"""
from __future__ import annotations

import dataclasses
from datetime import datetime, timedelta, timezone

MACROS = {"@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
          "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *"}
_MONTHS = {m: i + 1 for i, m in enumerate("jan feb mar apr may jun jul aug sep oct nov dec".split())}
_DAYS = {d: i for i, d in enumerate("sun mon tue wed thu fri sat".split())}
# name, lowest, highest, names
_FIELDS = (("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
           ("day of week", 0, 7, _DAYS))
SEARCH_DAYS = 366 * 8  # a 29 February every 4 years, skipped by the Gregorian rule at most once in 8


class CronError(ValueError):
    """Not a cron expression; the message names the field and the value."""


@dataclasses.dataclass(frozen=True)
class Cron:
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool  # day of month is *
    any_weekday: bool  # day of week is *

    def day_matches(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        dom, dow = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        if self.any_day or self.any_weekday:
            return dom and dow
        return dom or dow


def _number(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> int:
    value = names.get(text.lower()) if names else None
    if value is None:
        if not text.isdigit():
            raise CronError(f"{name} field: {text!r} is not a number{' or a name' if names else ''}")
        value = int(text)
    if not lo <= value <= hi:
        raise CronError(f"{name} field: {value} is out of range {lo}-{hi}")
    return value


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int]) -> frozenset[int]:
    out: set[int] = set()
    for part in text.split(","):
        body, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or not 1 <= int(step_text) <= 999:
                raise CronError(f"{name} field: step {step_text!r} is not a number from 1 to 999")
            step = int(step_text)
        if body in ("*", "?"):
            start, end = lo, hi
        elif "-" in body:
            a, _, b = body.partition("-")
            start, end = _number(a, name, lo, hi, names), _number(b, name, lo, hi, names)
            if start > end:
                raise CronError(f"{name} field: range {body!r} goes backwards")
        else:
            start = _number(body, name, lo, hi, names)
            end = hi if step_text else start
        out.update(range(start, end + 1, step))
    return frozenset(out)


def parse(expression: str) -> Cron:
    """A :class:`Cron` from ``expression``; :class:`CronError` naming what is wrong."""
    text = MACROS.get(expression.strip().lower(), expression.strip()) if isinstance(expression, str) else ""
    parts = text.split()
    if len(parts) != 5:
        raise CronError(f"{expression!r} is not a cron expression: it needs 5 fields (minute hour day-of-month "
                        "month day-of-week, e.g. '0 3 * * *') or a macro such as @daily")
    sets = [_field(p, *spec) for p, spec in zip(parts, _FIELDS)]
    weekdays = frozenset(d % 7 for d in sets[4])
    return Cron(sets[0], sets[1], sets[2], sets[3], weekdays, parts[2] in ("*", "?"), parts[4] in ("*", "?"))


def next_after(cron: Cron, after: datetime) -> datetime | None:
    """The first time strictly after ``after`` that ``cron`` fires (UTC, whole minutes); None if none
    within :data:`SEARCH_DAYS` (e.g. ``0 0 30 2 *``)."""
    after = after.astimezone(timezone.utc)
    start = after.replace(second=0, microsecond=0) + timedelta(minutes=1)
    day = start.replace(hour=0, minute=0)
    for _ in range(SEARCH_DAYS):
        if cron.day_matches(day):
            for hour in sorted(cron.hours):
                for minute in sorted(cron.minutes):
                    t = day.replace(hour=hour, minute=minute)
                    if t >= start:
                        return t
        day += timedelta(days=1)
    return None


def latest_due(cron: Cron, after: datetime, now: datetime) -> datetime | None:
    """The latest fire time in ``(after, now]`` (None: none). Walks from a day before ``now`` when that
    finds one, so a long outage under a frequent schedule costs at most a day of minutes."""
    for base in (max(after, now - timedelta(days=1)), after):
        latest, t = None, next_after(cron, base)
        while t is not None and t <= now:
            latest, t = t, next_after(cron, t)
        if latest is not None:
            return latest
    return None
