"""Headless Chromium from the system (Debian's ``chromium``) driven by Playwright for Python.

Playwright cannot download its own browsers here, so it launches the system's. Screenshots go to
one directory per test run that is kept afterwards (its path is printed at the end of the run), or
to ``$KVSTORE_SCREENSHOTS`` when set.
"""

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.conftest import unavailable

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def chromium_path() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        unavailable("Chromium is missing (Debian: apt-get install chromium; `make test` installs it as root)")
    assert found is not None
    return found


def expect(target: Any) -> Any:
    """Playwright's retrying assertions: they poll from outside the page, so the console's
    Content-Security-Policy (no eval) applies to the tests as it does to an attacker."""
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def launch() -> Iterator[Any]:
    """A headless browser for the duration of the generator; closed afterwards."""
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("Playwright for Python is missing (pip install -e '.[test]')")
    executable = chromium_path()
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


def screenshot_directory() -> Path:
    chosen = os.environ.get("KVSTORE_SCREENSHOTS")
    if chosen:
        path = Path(chosen)
        path.mkdir(parents=True, exist_ok=True)
        return path
    return Path(tempfile.mkdtemp(prefix="kvstore-console-screenshots-"))
