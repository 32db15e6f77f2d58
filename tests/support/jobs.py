"""``mmsearch job ...`` as real processes, for tests and benchmarks."""
from __future__ import annotations

import os
import subprocess
import sys


def run_job(*args: str, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    """``mmsearch job ARGS`` as a real process; AssertionError with its stderr when it fails."""
    result = subprocess.run([sys.executable, "-m", "mmsearch.cli", "job", *args], capture_output=True, text=True,
                            timeout=timeout, env={**os.environ, **(env or {})})
    assert result.returncode == 0, f"mmsearch job {' '.join(args)} failed ({result.returncode}):\n{result.stderr[-3000:]}"
    return result
