"""Headless Chromium for the dashboard's browser tests: Debian's build, driven by Playwright.

Playwright's own browser download is not used (and not reachable here);
``scripts/ensure_chromium.sh`` installs Debian's package, and the tests skip
with that reason when it is missing.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

CHROMIUM = Path(os.environ.get("AGGREGATOR_CHROMIUM", "/usr/bin/chromium"))
# No network here: nothing of Chromium's own may try to reach out.
ARGS = [
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--metrics-recording-only",
    *(["--no-sandbox"] if os.geteuid() == 0 else []),
]


def missing_reason() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if not CHROMIUM.exists():
        return (
            f"{CHROMIUM} is missing: `make test` installs Debian's chromium package when it runs as root "
            "or with sudo (scripts/ensure_chromium.sh)"
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[dev]')"
    return None


@contextmanager
def chromium() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class Visit:
    """A page opened in a fresh context, with everything it asked for and every console error."""

    page: Any
    response: Any
    requests: list[tuple[str, str]] = field(default_factory=list)  # (resource type, URL)
    failed: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def network_requests(self) -> list[tuple[str, str]]:
        return [(kind, url) for kind, url in self.requests if not url.startswith("data:")]


@contextmanager
def visit(browser: Any, url: str, *, until: str = "networkidle", **context: Any) -> Iterator[Visit]:
    """Open ``url`` (``context``: Playwright's new_context options) and wait ``until`` (Playwright's
    ``wait_until``: a network idle for 0.5 s by default, so every request the page makes is seen)."""
    ctx = browser.new_context(**context)
    try:
        ctx.set_default_timeout(10_000)  # a missing element fails in seconds, not Playwright's 30
        page = ctx.new_page()
        requests: list[tuple[str, str]] = []
        failed: list[str] = []
        errors: list[str] = []
        page.on("request", lambda r: requests.append((r.resource_type, r.url)))
        page.on("requestfailed", lambda r: failed.append(f"{r.url}: {r.failure}"))
        page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: errors.append(str(e)))
        response = page.goto(url, wait_until=until)
        yield Visit(page, response, requests, failed, errors)
    finally:
        ctx.close()
