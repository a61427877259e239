"""Headless Chromium for the page's tests and screenshots: the system's Chromium (Debian's ``chromium``) driven by
Playwright through ``executable_path``; Playwright never downloads a browser of its own here. Where either is
missing the tests skip with an install hint, and fail instead under ``LLAVA_EDGE_REQUIRE_TOOLS=1`` (CI)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from support.tools import missing, require_module

CHROMIUM_INSTALL = "apt-get install -y chromium (Debian; chromium-browser on Ubuntu)"
PLAYWRIGHT_INSTALL = "pip install '.[test]' (the playwright package; it needs no browser download)"
_CHROMIUM_COMMANDS = ("chromium", "chromium-browser")
RECORD_MUTATIONS = """
window.__changes = [];
new MutationObserver((records) => {
  for (const record of records) {
    const element = record.target.nodeType === 1 ? record.target : record.target.parentElement;
    if (element && (element.matches('.stage') || element.matches('.answer'))) {
      window.__changes.push([element.className.split(' ')[0], element.textContent]);
    }
  }
}).observe(document, {subtree: true, childList: true, characterData: true});
"""
"""An init script: every text the cards' ``.stage`` and ``.answer`` elements show, in order, in ``__changes``."""


def chromium_path() -> str:
    """The system Chromium's path, or skip/fail with the install hint."""
    for command in _CHROMIUM_COMMANDS:
        found = shutil.which(command)
        if found is not None:
            return found
    missing("Chromium", CHROMIUM_INSTALL)
    raise AssertionError("unreachable")


@contextmanager
def chromium() -> Iterator[Any]:
    """A headless Chromium (Playwright's sync ``Browser``) on the system's Chromium binary."""
    require_module("playwright", PLAYWRIGHT_INSTALL)
    path = chromium_path()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=path)
        try:
            yield browser
        finally:
            browser.close()


@dataclass
class PageLog:
    """What a browser context did: every request URL, console messages, page errors and dialogs."""

    requests: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @classmethod
    def attach(cls, context: Any) -> PageLog:
        log = cls()
        context.on("request", lambda request: log.requests.append(request.url))
        context.on("page", log._watch)
        return log

    def _watch(self, page: Any) -> None:
        page.on("console", lambda message: self.console.append(f"{message.type}: {message.text}"))
        page.on("pageerror", lambda error: self.console.append(f"pageerror: {error}"))
        page.on("dialog", self._dismiss)

    def _dismiss(self, dialog: Any) -> None:
        self.dialogs.append(dialog.message)
        dialog.dismiss()

    def off_loopback(self) -> list[str]:
        """Requests to anywhere but 127.0.0.1 (the page's own blobs excepted)."""
        return [url for url in self.requests
                if urlsplit(url).scheme not in ("blob", "data") and urlsplit(url).hostname != "127.0.0.1"]

    def policy_violations(self) -> list[str]:
        return [line for line in self.console if "Content Security Policy" in line]
