"""Fixtures for the real-browser tests: Chromium through Playwright, the built site served on loopback.

Run through `make test-browser` (it installs Chromium and builds the site in the quick profile first).
"""

from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, sync_playwright
from support import CHROMIUM_FLAGS, SITE, PageWatch


def chromium_path() -> str:
    path = os.environ.get("CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.exit(f"Chromium not found at {path}: install it (Debian: apt-get install chromium chromium-driver) "
                    "or set CHROMIUM=/path/to/chromium; `make test-browser` installs it.", returncode=2)
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=chromium_path(), headless=True, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def watched(browser: Browser) -> Iterator[tuple[Page, PageWatch]]:
    """A page in a fresh context (its own profile, 1280x900) with the loopback guard attached."""
    watch = PageWatch()
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    watch.attach(context)
    page = context.new_page()
    watch.watch(page)
    yield page, watch
    context.close()


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args) -> None:  # noqa: A002
        pass


@pytest.fixture(scope="session")
def site_url() -> Iterator[str]:
    """The built site, served on 127.0.0.1 at a free port."""
    if not (SITE / "index.html").exists():
        pytest.exit(f"no site at {SITE}: build it first (`make test-browser` does, in the quick profile)", returncode=2)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=SITE))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
