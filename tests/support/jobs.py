"""``mmsearch job ...`` as real processes, for tests and benchmarks."""
from __future__ import annotations

import os
import subprocess
import sys


def job(*args: str, env: dict | None = None, timeout: float = 300, nice: int = 0) -> subprocess.CompletedProcess:
    """``mmsearch job ARGS`` as a real process, whatever its outcome (tests of refusals read it); ``nice``
    lowers its CPU priority (a benchmark's stand-in for a Job in a pod of its own: ``nice`` the command, not
    a preexec_fn, which stops subprocess from spawning without a fork and stalls the caller's threads)."""
    niced = ["nice", "-n", str(nice)] if nice else []
    return subprocess.run([*niced, sys.executable, "-m", "mmsearch.cli", "job", *args], capture_output=True,
                          text=True, timeout=timeout, env={**os.environ, **(env or {})})


def run_job(*args: str, env: dict | None = None, timeout: float = 300, nice: int = 0) -> subprocess.CompletedProcess:
    """``mmsearch job ARGS`` as a real process; AssertionError with its stderr when it fails."""
    result = job(*args, env=env, timeout=timeout, nice=nice)
    assert result.returncode == 0, f"mmsearch job {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result



_KILLED_AFTER = """
import os, signal, sys
from mmsearch.jobs import progress

def hook(stage, done):
    if done >= {done}:
        sys.stdout.flush()
        os.kill(os.getpid(), signal.SIGKILL)

progress.after_update = hook
from mmsearch.cli import app
app(["job", *sys.argv[1:]], prog_name="mmsearch")
"""


def job_killed_after(done: int, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mmsearch job ARGS`` as a real process that SIGKILLs itself at the end of the first batch after
    which at least ``done`` documents are done (the job's progress hook): a crash at a known point,
    whatever the machine's speed. The finished process: its return code is -SIGKILL when the kill landed."""
    return subprocess.run([sys.executable, "-c", _KILLED_AFTER.format(done=int(done)), *args], capture_output=True,
                          text=True, timeout=timeout)
