"""How busy the (shared) machine is, for benchmarks that must not report a ratio measured while it was.

:func:`others_busy` measures, over a short window in which the benchmark
itself is idle, how many cores the machine spent on processes other than the
benchmark's own (``/proc/stat`` busy time minus the CPU time of the given
pids). The 1-minute load average alone cannot say that: a benchmark's own
previous measurement keeps it high for minutes.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

TICK = os.sysconf("SC_CLK_TCK")


def machine_busy_seconds() -> float:
    """CPU seconds every core spent busy since boot (user, nice, system, irq, softirq, steal)."""
    fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[:8])
    return (user + nice + system + irq + softirq + steal) / TICK


def process_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its waited-for children (0.0 once it is gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return sum(int(x) for x in fields[11:15]) / TICK


@dataclass(frozen=True)
class Busy:
    others: float        # cores used by other processes during the window
    load_average: float  # 1-minute load average at the end of the window

    def describe(self, cores: int | None = None) -> str:
        cores = cores or os.cpu_count() or 1
        return f"other processes used {self.others:.2f} of {cores} cores; load average {self.load_average:.2f}"


def others_busy(own_pids: Iterable[int], seconds: float = 2.0) -> Busy:
    """Cores spent by processes other than ``own_pids`` (and this one) over ``seconds`` of idling here."""
    pids = {os.getpid(), *own_pids}
    start_machine, start_own, start = machine_busy_seconds(), sum(map(process_seconds, pids)), time.monotonic()
    time.sleep(seconds)
    elapsed = time.monotonic() - start
    used = machine_busy_seconds() - start_machine - (sum(map(process_seconds, pids)) - start_own)
    return Busy(max(0.0, used / elapsed), os.getloadavg()[0])


def wait_quiet(own_pids: Iterable[int] = (), *, threshold: float = 0.3, patience: float = 120.0,
               window: float = 2.0) -> Busy:
    """Wait (up to ``patience`` seconds) for a window in which others use at most ``threshold`` cores;
    returns the last measurement (still busy when the wait ran out: the caller says so)."""
    deadline = time.monotonic() + patience
    while True:
        busy = others_busy(own_pids, window)
        if busy.others <= threshold or time.monotonic() >= deadline:
            return busy


class Parts:
    """Timed parts of a benchmark and whether the machine was quiet before each (see :func:`wait_quiet`).

    ``before(name)`` waits for a quiet window and prints what it found; ``ratio(label, a, b, value)``
    prints the ratio of two parts, or refuses it when either started on a busy machine.
    """

    def __init__(self, threshold: float = 0.3, patience: float = 120.0, own_pids: Iterable[int] = ()):
        self.threshold, self.patience, self.own = threshold, patience, list(own_pids)
        self.busy: dict[str, Busy] = {}

    def before(self, name: str) -> None:
        busy = self.busy[name] = wait_quiet(self.own, threshold=self.threshold, patience=self.patience)
        flag = f"  BUSY (> {self.threshold:.2f})" if busy.others > self.threshold else ""
        print(f"  [{name}] before: {busy.describe()}{flag}", flush=True)

    def is_busy(self, *names: str) -> list[str]:
        return [n for n in names if n in self.busy and self.busy[n].others > self.threshold]

    def ratio(self, label: str, value: float, *parts: str, target: str = "") -> float | None:
        busy = self.is_busy(*parts)
        if busy:
            print(f"{label}: REFUSED, the machine was busy before {', '.join(busy)} "
                  f"({'; '.join(self.busy[n].describe() for n in busy)})")
            return None
        print(f"{label} = {value:.2f}x" + (f"  (target {target})" if target else ""))
        return value
