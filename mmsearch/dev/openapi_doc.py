"""Writes docs/openapi.json: the JSON API's OpenAPI 3.1 document with the default request limits.

The document is built by :func:`mmsearch.services.web.openapi.document` from the
rules the handlers apply; a running web serves its own (its limits) at
``GET /openapi.json``. tests/web/test_openapi.py fails when this file is stale.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

from mmsearch.core.limits import RequestLimits

OUTPUT = Path(__file__).resolve().parents[2] / "docs" / "openapi.json"
COMMAND = "python -m mmsearch.dev.openapi_doc"


def render() -> str:
    from mmsearch.services.web.app import max_token_chars
    from mmsearch.services.web.openapi import document

    limits = RequestLimits()
    return json.dumps(document(limits, max_token_chars=max_token_chars(limits.top_k)), indent=2) + "\n"


def main() -> int:
    OUTPUT.write_text(render())
    print(f"wrote {OUTPUT} (regenerate with `{COMMAND}` or `make docs`)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
