"""The console in a real headless Chromium (Debian's, at /usr/bin/chromium, driven by
Playwright; no browser is downloaded) against the daemon as a real process."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
from aiohttp import web
from playwright.async_api import Page, expect

from tests.e2e.support import Backend, queue_route, wait_for

TOKEN = "console-e2e-token-0123456789abcdef"
# Sets a flag and opens a dialog if it ever runs: both are checked in the page.
XSS = (
    "<script>window.__pwned = 1; alert('script')</script>"
    "<img src=x onerror=\"window.__pwned = 2; alert('img')\">"
)


class Switchable(Backend):
    """A backend that answers ``status`` (500 until told otherwise)."""

    def __init__(self) -> None:
        super().__init__()
        self.status = 500

    async def handle(self, request: web.Request) -> web.Response:
        await super().handle(request)
        return web.json_response({"status": self.status}, status=self.status)


async def send(url: str, key: str, body: bytes = b"{}", **headers: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=body, headers={"Idempotency-Key": key, **headers}) as resp,
    ):
        assert resp.status == 202, await resp.text()
        return int((await resp.json())["event_id"])


async def reload_until(page: Page, selector: str, text: str, count: int = 1) -> None:
    """Reload until ``count`` elements match and the first says ``text``: a page
    shows the store as it was when served."""

    async def shown() -> bool:
        await page.reload()
        found = page.locator(selector)
        return await found.count() == count and text in (await found.first.inner_text())

    await wait_for(shown, 10, f"{selector} to show {text!r}", interval=0.1)


async def started(relays: Any, start_backend: Any, backend: Backend, **top: Any) -> Any:
    await start_backend(backend)
    relay = relays(
        [
            queue_route(backend, "orders", retry={"max_attempts": 1}),
            queue_route(backend, "github", retry={"max_attempts": 1}),
        ],
        **top,
    )
    await relay.start()
    return relay


async def test_overview_lists_routes_and_the_events_list_filters(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Backend()
    relay = await started(relays, start_backend, backend)
    for i in range(3):
        await send(relay.url("/orders"), f"o-{i}")
    await send(relay.url("/github"), "g-1")
    await page.goto(relay.admin_url("/ui/"))
    await expect(page.locator("tr.route")).to_have_count(2)
    await expect(page.locator('tr.route[data-route="orders"]')).to_contain_text("/orders")
    await expect(page.locator("svg.spark").first).to_be_visible()
    await page.click("text=Events")
    await expect(page.locator("#events tbody tr")).to_have_count(4)
    await page.select_option("select[name=route]", "github")
    await page.click("#filters button[type=submit]")
    await expect(page.locator("#events tbody tr")).to_have_count(1)
    await expect(page.locator("#events")).to_contain_text("g-1")
    assert "route=github" in page.url


async def test_a_dead_event_replayed_from_its_page_reaches_the_backend(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Switchable()
    relay = await started(relays, start_backend, backend)
    event_id = await send(relay.url("/orders"), "dead-1", body=b'{"order": 7}')
    await page.goto(relay.admin_url(f"/ui/events/{event_id}"))
    await reload_until(page, "h1 .state", "dead")
    await expect(page.locator("#attempts")).to_contain_text("HTTP 500")
    await expect(page.locator("#body-text")).to_contain_text('"order": 7')
    backend.status = 200
    await page.click("#replay")
    await expect(page.locator("#preview")).to_contain_text("1")
    await page.fill("input[name=reason]", "backend fixed")
    await page.click("#confirm")
    await expect(page.locator("#flash")).to_contain_text("Replayed: 1")
    await wait_for(lambda: backend.received["dead-1"] >= 2, 10, "the replay to reach the backend")
    await reload_until(page, "h1 .state", "delivered")


async def test_dead_letters_bulk_replay_shows_the_count_first(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Switchable()
    relay = await started(relays, start_backend, backend)
    for key in ("a", "b", "c"):
        await send(relay.url("/orders"), key)
    await wait_for(lambda: backend.requests >= 3, 10, "three failed attempts")
    await page.goto(relay.admin_url("/ui/dead?route=orders"))
    await reload_until(page, "#events tbody tr", "dead", count=3)
    backend.status = 200
    await page.click("#replay-all")
    await expect(page.locator("#count")).to_have_text("3")
    await page.fill("input[name=reason]", "bulk after the fix")
    await page.click("#confirm")
    await expect(page.locator("#flash")).to_contain_text("Replayed: 3")
    await wait_for(lambda: backend.requests >= 6, 10, "the three replays")


async def test_live_tail_shows_a_new_webhook_within_two_seconds(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Backend()
    relay = await started(relays, start_backend, backend)
    await page.goto(relay.admin_url("/ui/tail"))
    await expect(page.locator("#tail-status")).to_contain_text("last at")
    await send(relay.url("/orders"), "tail-me")
    await expect(page.locator("#tail-events")).to_contain_text("tail-me", timeout=2_000)
    await expect(page.locator("#tail-attempts")).to_contain_text("HTTP 200", timeout=2_000)


async def test_a_hostile_webhook_is_shown_as_text_and_runs_nothing(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Backend()
    relay = await started(relays, start_backend, backend)
    body = json.dumps({"comment": XSS}).encode()
    event_id = await send(relay.url("/orders"), XSS, body=body, **{"X-Comment": XSS})
    await page.goto(relay.admin_url("/ui/tail"))
    await expect(page.locator("#tail-events")).to_contain_text("window.__pwned = 1")
    for path in (f"/ui/events/{event_id}", "/ui/events", "/ui/", "/ui/dead"):
        await page.goto(relay.admin_url(path))
    await page.goto(relay.admin_url(f"/ui/events/{event_id}"))
    assert await page.locator("#key").text_content() == XSS  # shown, as text
    await expect(page.locator("#headers")).to_contain_text("onerror=")
    await expect(page.locator("#body-text")).to_contain_text("<script>")
    assert await page.locator("#body img, #key img, #headers img, main script").count() == 0
    assert await page.evaluate("typeof window.__pwned") == "undefined"
    assert page.dialogs == []  # type: ignore[attr-defined]


async def test_a_token_is_asked_once_and_forms_need_their_csrf_token(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Backend()
    await start_backend(backend)
    relay = relays([queue_route(backend, "orders")])
    doc = relay.config()
    doc["admin"]["token_env"] = "RELAY_ADMIN_TOKEN"
    relay.rewrite(doc)
    relay.extra_env["RELAY_ADMIN_TOKEN"] = TOKEN
    await relay.start()
    event_id = await send(relay.url("/orders"), "k-1")
    await page.goto(relay.admin_url(f"/ui/events/{event_id}"))
    assert "/ui/login" in page.url
    await page.fill("input[name=token]", "not-it")
    await page.click("button[type=submit]")
    await expect(page.locator("#login-failed")).to_be_visible()
    await page.fill("input[name=token]", TOKEN)
    await page.click("button[type=submit]")
    await expect(page.locator("#key")).to_have_text("k-1")  # back where it was going
    assert await page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
    # The browser's cookie without the page's token, as another site's form would send:
    refused = await page.request.post(
        relay.admin_url(f"/ui/events/{event_id}/replay"), form={"force": "1"}
    )
    assert refused.status == 403
    await page.click("text=Sign out")
    await page.goto(relay.admin_url("/ui/"))
    assert "/ui/login" in page.url
