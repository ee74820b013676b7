"""Helpers for the browser tests: the system's Chromium driven by Playwright, screenshots.

The browser is Debian's `/usr/bin/chromium`; nothing is ever downloaded. Each launch gets a
fresh, throwaway user-data-dir (Playwright makes one per `launch()`, so no profile, cache or
storage leaks between runs), and each test its own browser context on top of it.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Dialog,
    Page,
    Request,
    ViewportSize,
    sync_playwright,
)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
REPO_ROOT = Path(__file__).resolve().parent.parent
SCREENSHOTS = REPO_ROOT / "artifacts" / "screenshots"

DESKTOP: ViewportSize = {"width": 1100, "height": 800}
MOBILE: ViewportSize = {"width": 390, "height": 844}


@contextmanager
def chromium() -> Iterator[Browser]:
    """The system Chromium, headless."""
    if not Path(CHROMIUM).exists():
        raise RuntimeError(f"{CHROMIUM} is missing: install Debian's chromium package")
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageWatch:
    """What a page did that a test may want to assert on: script errors, console errors
    (CSP violations land there), dialogs (an XSS would open one), and requests made."""

    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Page) -> None:
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("console", self._console)
        page.on("dialog", self._dialog)
        page.on("request", self._request)

    def _console(self, message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        url = message.location.get("url", "")
        # A 4xx answer from the API or a page is part of the flow under test (Chromium logs
        # each one); a missing asset of ours is not. The stand-in's pages have no favicon.
        if message.text.startswith("Failed to load resource") and "/static/" not in url:
            return
        self.errors.append(f"console: {message.text} at {url}")

    def _dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def _request(self, request: Request) -> None:
        self.requests.append(request.url)

    def status_polls(self) -> int:
        return sum(1 for url in self.requests if re.search(r"/api/checkout-sessions/.+/order", url))


def screenshot(page: Page, name: str) -> Path:
    """Saves a full-page screenshot as artifacts/screenshots/<name>.png and says where."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    path = SCREENSHOTS / f"{safe}.png"
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path
