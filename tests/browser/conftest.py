"""The browser tests drive the daemon as the end-to-end tests do (their fixtures), in
Debian's Chromium (``browser``, ``page``): no browser is downloaded."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from playwright.async_api import Browser, Dialog, Page, async_playwright

from tests.e2e.conftest import pytest_runtest_makereport, relays, start_backend

__all__ = ["browser", "page", "pytest_runtest_makereport", "relays", "start_backend"]

CHROMIUM = "/usr/bin/chromium"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def have_browser() -> bool:
    return Path(CHROMIUM).exists()


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    if not have_browser():
        message = f"no browser at {CHROMIUM}: `apt-get install chromium` (Debian's package)"
        if os.environ.get("RELAY_REQUIRE_BROWSER") == "1":
            pytest.fail(message)
        pytest.skip(message)
    async with async_playwright() as p:
        b = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS, headless=True)
        yield b
        await b.close()


@pytest.fixture
async def page(browser: Browser) -> AsyncIterator[Page]:
    context = await browser.new_context()
    pg = await context.new_page()
    dialogs: list[str] = []

    async def on_dialog(d: Dialog) -> None:
        dialogs.append(d.message)
        await d.dismiss()

    pg.on("dialog", on_dialog)
    pg.dialogs = dialogs  # type: ignore[attr-defined]
    yield pg
    await context.close()
