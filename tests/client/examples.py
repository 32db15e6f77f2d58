"""The runnable examples of docs/client.md: every ```python block that starts with ``# example: NAME``."""
from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
_BLOCK = re.compile(r"```python\n(# example: ([a-z-]+)\n.*?)```", re.S)


def examples() -> dict[str, str]:
    """Example name -> its script."""
    return {name: code for code, name in _BLOCK.findall(DOC.read_text())}
