"""Shared by the real-browser tests: paths, the loopback-only network guard, screenshot paths.

Settings: BOOK_SITE (the built site, default _build/book-quick/html), BOOK_CHAPTERS (the chapter sources,
default chapters/), CHROMIUM (the browser binary, default /usr/bin/chromium), SCREENSHOTS (default
_build/screenshots).
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from urllib.parse import urlparse

from playwright.sync_api import BrowserContext, Page

ROOT = Path(__file__).resolve().parents[1]
SITE = Path(os.environ.get("BOOK_SITE") or ROOT / "_build" / "book-quick" / "html").resolve()
CHAPTERS_DIR = Path(os.environ.get("BOOK_CHAPTERS") or ROOT / "chapters").resolve()
SCREENSHOTS = Path(os.environ.get("SCREENSHOTS") or ROOT / "_build" / "screenshots")
CHROMIUM_FLAGS = [
    "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage",
]


def chapter_sources() -> list[Path]:
    """Every chapter source, chapters/NN_topic.py, in course order."""
    return sorted(p for p in CHAPTERS_DIR.glob("*.py") if re.fullmatch(r"\d\d_\w+\.py", p.name))


def is_loopback(url: str) -> bool:
    """True for URLs that stay on this machine: loopback hosts, files, and data:/blob:/about: URLs."""
    parsed = urlparse(url)
    if parsed.scheme in ("file", "data", "blob", "about", "chrome-error"):
        return True
    host = (parsed.hostname or "").strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class PageWatch:
    """Everything a page did that a test should fail on: non-loopback requests, failed loads, script errors."""

    def __init__(self) -> None:
        self.external: list[str] = []
        self.failed: list[str] = []
        self.errors: list[str] = []

    def attach(self, context: BrowserContext) -> None:
        def route(route, request) -> None:
            if is_loopback(request.url):
                route.continue_()
            else:
                self.external.append(request.url)
                route.abort()

        context.route("**/*", route)

    def watch(self, page: Page) -> None:
        page.on("websocket", lambda ws: None if is_loopback(ws.url) else self.external.append(ws.url))
        page.on("response", lambda r: r.status >= 400 and self.failed.append(f"HTTP {r.status} {r.url}"))
        page.on("requestfailed", lambda r: self.failed.append(f"{r.failure} {r.url}"))
        page.on("pageerror", lambda e: self.errors.append(f"page error: {e}"))
        page.on("console", lambda m: m.type == "error" and self.errors.append(f"console error: {m.text}"))

    def check(self, allow_failed: tuple[str, ...] = ()) -> None:
        assert not self.external, f"requests left loopback: {self.external}"
        failed = [f for f in self.failed if not any(a in f for a in allow_failed)]
        assert not failed, f"requests failed: {failed}"
        assert not self.errors, f"script errors: {self.errors}"



def screenshot_path(kind: str, name: str) -> Path:
    path = SCREENSHOTS / kind / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    return path
