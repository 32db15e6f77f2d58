"""Steps on the search page shared by the browser tests (Playwright sync API)."""
from __future__ import annotations

WAIT_MS = 20_000


def results(page) -> list[str]:
    page.wait_for_selector(".result", timeout=WAIT_MS)
    return page.locator(".result .question").all_text_contents()


def type_query(page, text: str) -> None:
    """Type like a person (one key at a time): exercises the debounced search-as-you-type."""
    page.locator("#q").fill("")
    page.locator("#q").press_sequentially(text, delay=15)


def wait_for_summary(page, text: str) -> str:
    page.wait_for_function(
        "t => document.querySelector('#summary-line').textContent.includes(t)", arg=text, timeout=WAIT_MS)
    return page.text_content("#summary-line")
