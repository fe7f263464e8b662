"""What the console tells an operator, read off the page in a real Chromium: sync and
shadow routes that are not idle, a shadow copy named as such (no internal key), why
a route's deliveries wait, times with how long ago, errors with a way back, and the
admin listener's root leading to the console."""

from __future__ import annotations

import re
import time
from typing import Any

import aiohttp
from playwright.async_api import Page, expect

from tests.browser.test_console_browser import Switchable, send
from tests.e2e.support import Backend, queue_route, sync_route, wait_for


async def post(url: str, key: str) -> int:
    async with (
        aiohttp.ClientSession() as s,
        s.post(url, data=b"{}", headers={"Idempotency-Key": key}) as resp,
    ):
        return resp.status


async def test_sync_and_shadow_routes_read_as_busy_and_a_shadow_copy_is_named(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = await start_backend(Backend())
    relay = relays(
        [
            sync_route(backend, "pay"),
            queue_route(backend, "mirror", dedupe="shadow"),
        ]
    )
    await relay.start()
    run = time.time_ns()
    for n in range(3):
        assert await post(relay.url("/pay"), f"p-{run}-{n}") == 200
    assert await post(relay.url("/pay"), f"p-{run}-0") == 200  # replayed from the store
    assert await post(relay.url("/mirror"), f"m-{run}") == 202
    assert await post(relay.url("/mirror"), f"m-{run}") == 202  # a shadow copy

    await page.goto(relay.admin_url("/"))  # the root leads to the console
    assert page.url.endswith("/ui/")

    async def counted() -> bool:
        await page.reload()
        row = page.locator('tr.route[data-route="pay"]')
        text = await row.inner_text()
        # Taken 3, duplicates 1 (the sparkline's total beside each line).
        return bool(re.search(r"\b3\b.*\b1\b", text.split("sync", 1)[-1], re.S))

    await wait_for(counted, 10, "the sync route's counts on the overview", interval=0.2)

    async def rated() -> bool:
        await page.reload()
        row = await page.locator('tr.route[data-route="mirror"]').inner_text()
        return "100% ok" in row  # both copies delivered at their first attempt

    await wait_for(rated, 10, "the shadow route's delivered share", interval=0.2)
    assert "in line" in await page.locator('tr.route[data-route="pay"]').inner_text()

    await page.goto(relay.admin_url("/ui/events?route=mirror"))
    await expect(page.locator("#events tbody tr")).to_have_count(2)
    keys = await page.locator("#events td.key").all_inner_texts()
    assert all("\x1f" not in k and "shadow\x1f" not in k for k in keys)
    assert sorted(k.replace(" shadow copy", "") for k in keys) == [f"m-{run}", f"m-{run}"]
    assert sum("shadow copy" in k for k in keys) == 1
    await page.locator("#events tbody tr", has_text="shadow copy").locator("a").first.click()
    await expect(page.locator("#dedupe")).to_contain_text("a shadow copy of key")
    await expect(page.locator("#dedupe")).not_to_contain_text("absorbed as duplicates")
    await expect(page.locator(".facts").first).to_contain_text("ago)")


async def test_an_event_of_a_paused_route_says_why_it_waits(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend, "orders")])
    await relay.start()
    async with aiohttp.ClientSession() as s:
        body = {"reason": "backend deploy"}
        async with s.post(relay.admin_url("/api/v1/routes/orders/pause"), json=body) as resp:
            assert resp.status == 200
    event_id = await send(relay.url("/orders"), f"held-{time.time_ns()}")
    await page.goto(relay.admin_url(f"/ui/events/{event_id}"))
    await expect(page.locator("p.held")).to_contain_text(
        "route orders is paused (backend deploy): its deliveries wait until it is resumed"
    )
    await page.goto(relay.admin_url(f"/ui/events/{event_id}/replay"))
    await expect(page.locator("p.held")).to_contain_text("a replay waits too")
    # An error page says what went wrong and leads back.
    await page.goto(relay.admin_url("/ui/events/999999"))
    await expect(page.locator("#error-message")).to_be_visible()
    await page.click("#back")
    await expect(page.locator("h1")).to_have_text("Overview")


async def test_an_events_story_after_a_replay_agrees_with_itself(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = await start_backend(Backend())
    relay = relays(
        [queue_route(backend, "orders", retry={"max_attempts": 1}), sync_route(backend, "pay")]
    )
    await relay.start()
    run = time.time_ns()
    event_id = await send(relay.url("/orders"), f"o-{run}")
    assert await post(relay.url("/orders"), f"o-{run}") == 202  # a duplicate, absorbed

    async def delivered() -> bool:  # the relay's record: a delivery in flight is not replayed
        async with (
            aiohttp.ClientSession() as s,
            s.get(relay.admin_url(f"/api/v1/events/{event_id}")) as resp,
        ):
            return bool((await resp.json())["state"] == "delivered")

    await wait_for(delivered, 10, "the first delivery, recorded")
    async with aiohttp.ClientSession() as s:
        url = relay.admin_url(f"/api/v1/events/{event_id}/replay?force=1")
        async with s.post(url, json={"reason": "customer asked"}) as resp:
            assert resp.status == 200
    await wait_for(lambda: backend.received[f"o-{run}"] == 2, 10, "the replayed delivery")

    async def told() -> bool:
        await page.goto(relay.admin_url(f"/ui/events/{event_id}"))
        return await page.locator("#story li.attempt").count() == 2

    await wait_for(told, 10, "both attempts on the event page", interval=0.2)
    story = await page.locator("#story").inner_text()
    lines = [line for line in story.splitlines() if line.strip()]
    assert "received" in lines[0]
    assert "1 later copy of the key" in story
    assert "replayed by loopback (forced: delivered ones too): customer asked" in story
    assert story.index("#1") < story.index("replayed by") < story.index("#2")
    assert "2 attempts" in await page.locator("#attempts h2").inner_text()
    cell = await page.locator("#deliveries tbody td.num").first.inner_text()
    assert cell.startswith("2")  # the count agrees with what is listed

    assert await post(relay.url("/pay"), f"p-{run}") == 200
    assert await post(relay.url("/pay"), f"p-{run}") == 200  # answered from the store
    await page.goto(relay.admin_url("/ui/events?route=pay"))
    await page.locator("#events tbody tr a").first.click()
    await expect(page.locator("#story")).to_contain_text("kept answer: HTTP 200")


async def test_a_probing_breaker_with_nothing_waiting_does_not_look_down(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = Switchable()
    await start_backend(backend)
    route = queue_route(
        backend,
        "orders",
        retry={"max_attempts": 2, "initial": "100ms"},
        breaker={"failures": 1, "probe_interval": "300ms", "ramp": "0s"},
    )
    relay = relays([route])
    await relay.start()
    event_id = await send(relay.url("/orders"), f"b-{time.time_ns()}")

    async def idle() -> bool:
        await page.goto(relay.admin_url("/ui/"))
        return (
            "breaker idle: the next delivery probes" in await page.locator("#routes").inner_text()
        )

    # Both attempts fail (500), the delivery goes dead, and the next probe finds no work.
    await wait_for(idle, 15, "the breaker shown idle once nothing waits", interval=0.3)
    async with (
        aiohttp.ClientSession() as s,
        s.get(relay.admin_url(f"/api/v1/events/{event_id}")) as resp,
    ):
        assert (await resp.json())["state"] == "dead"


async def test_the_live_tail_starts_full_fits_the_window_and_shows_duplicates_and_refusals(
    relays: Any, start_backend: Any, page: Page
) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend, "orders")])
    await relay.start()
    run = time.time_ns()
    long_key = f"k-{run}-" + "x" * 160
    await send(relay.url("/orders"), long_key)
    await page.set_viewport_size({"width": 1400, "height": 900})
    await page.goto(relay.admin_url("/ui/tail"))
    # Served with the newest rows: no empty skeleton waiting for the first poll.
    html = await (await page.request.get(relay.admin_url("/ui/tail"))).text()
    assert long_key[:40] in html, html[html.find("tail-events") : html.find("tail-events") + 600]
    await expect(page.locator("#tail-events tbody tr")).to_have_count(1)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1400

    # A duplicate and a refusal leave no event: the tail says them anyway.
    await expect(page.locator("#tail-status")).to_contain_text("last at")
    assert await post(relay.url("/orders"), long_key) == 202
    async with aiohttp.ClientSession() as s, s.get(relay.url("/orders")) as resp:
        assert resp.status == 405
    counts = page.locator("#tail-counts tbody")
    await expect(counts).to_contain_text("1 duplicate absorbed", timeout=10_000)
    await expect(counts).to_contain_text("1 rejected: method_not_allowed", timeout=10_000)
    assert (await counts.inner_text()).count("Z") >= 1  # UTC, as every other time shown
    await send(relay.url("/orders"), f"k-{run}-second")
    await expect(page.locator("#tail-events tbody tr")).to_have_count(2, timeout=10_000)
    assert await page.evaluate("document.documentElement.scrollWidth") <= 1400
