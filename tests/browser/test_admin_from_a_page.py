"""A web page cannot steer a tokenless admin listener (the quick start's setup): a
page served from another local port tries every mutating endpoint in real Chromium
with ``fetch(..., {mode: "no-cors"})``, a CORS ``fetch`` with a JSON body and a
form post; a page on a rebound name (``evil.example`` resolving to 127.0.0.1) tries
to read events. Nothing changes in the store or the audit log, no data goes out,
and the relay counts every refusal (so the attacks did reach it)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from playwright.async_api import Browser, Page, async_playwright

from tests.browser.conftest import CHROMIUM, FLAGS
from tests.browser.test_console_browser import send, started
from tests.e2e.support import HOST, Backend, wait_for

ATTACKS = """
async (admin) => {
  const calls = [
    ["/api/v1/events/1/replay?force=1", {}],
    ["/api/v1/replay", {all: true, force: true, reason: "pwned"}],
    ["/api/v1/purge", {all: true, reason: "pwned"}],
    ["/api/v1/routes/orders/pause", {reason: "pwned"}],
  ];
  for (const [path, body] of calls) {
    const text = JSON.stringify(body);
    // A "simple" request: the browser sends it without asking anyone.
    await fetch(admin + path, {method: "POST", mode: "no-cors", body: text,
                               headers: {"Content-Type": "text/plain"}}).catch(() => {});
    await fetch(admin + path, {method: "POST", mode: "no-cors"}).catch(() => {});
    // A JSON body forces a preflight, which the admin never grants.
    await fetch(admin + path, {method: "POST", mode: "cors", body: text,
                               headers: {"Content-Type": "application/json"}}).catch(() => {});
  }
  // And a classic form post into a hidden frame.
  const frame = document.createElement("iframe");
  frame.name = "sink";
  document.body.appendChild(frame);
  const form = document.createElement("form");
  form.method = "POST";
  form.action = admin + "/api/v1/replay";
  form.target = "sink";
  form.enctype = "text/plain";
  const field = document.createElement("input");
  field.name = '{"all": true, "force": true, "reason": "x", "pad": "';
  field.value = '"}';
  form.appendChild(field);
  document.body.appendChild(form);
  const loaded = new Promise((done) => frame.addEventListener("load", done));
  form.submit();
  await loaded;
  return true;
}
"""


async def evil_site(aiohttp_server: Any) -> str:
    """Another origin on this machine: a blank page the attacks run from."""

    async def page(_request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>cats</title><body></body>", content_type="text/html"
        )

    app = web.Application()
    app.router.add_get("/", page)
    server = await aiohttp_server(app, host=HOST)
    return f"http://localhost:{server.port}/"


async def admin_json(url: str) -> Any:
    async with aiohttp.ClientSession() as s, s.get(url) as resp:
        assert resp.status == 200, await resp.text()
        return await resp.json()


async def refusals(relay: Any) -> dict[str, float]:
    async with aiohttp.ClientSession() as s, s.get(relay.admin_url("/metrics")) as resp:
        text = await resp.text()
    return {
        m.group(1): float(m.group(2))
        for m in re.finditer(r'^relay_admin_refused_total\{reason="(\w+)"\} (\S+)$', text, re.M)
    }


async def test_a_page_on_another_origin_changes_nothing(
    relays: Any, start_backend: Any, browser: Browser, aiohttp_server: Any
) -> None:
    backend = Backend()
    relay = await started(relays, start_backend, backend)  # no token: loopback only
    event_id = await send(relay.url("/orders"), "paid-1")
    url = relay.admin_url(f"/api/v1/events/{event_id}")

    async def delivered() -> bool:  # the relay's record, not the backend's receipt
        return bool((await admin_json(url))["state"] == "delivered")

    await wait_for(delivered, 10, "the first delivery, recorded")
    before = await admin_json(url)
    origin = await evil_site(aiohttp_server)
    context = await browser.new_context()
    page: Page = await context.new_page()
    await page.goto(origin)
    assert await page.evaluate(ATTACKS, f"http://{HOST}:{relay.admin_port}")
    await context.close()

    after = await admin_json(relay.admin_url(f"/api/v1/events/{event_id}"))
    assert after == before  # not replayed, not purged
    assert backend.distinct == 1 and len(backend.received) == 1
    status = await admin_json(relay.admin_url("/api/v1/status"))
    assert status["pauses"] == [] and not any(r["paused"] for r in status["routes"])
    assert (await admin_json(relay.admin_url("/api/v1/audit")))["entries"] == []
    refused = await refusals(relay)
    # Each of the 13 attempts that left the browser was refused at the door (the
    # CORS ones stop at their preflight, which is refused too: it is not JSON-typed
    # but an OPTIONS; counted only where the browser sent the POST itself).
    assert refused["cross_site"] >= 9, refused


@pytest.fixture
async def rebinding_browser() -> AsyncIterator[Browser]:
    """Chromium whose resolver maps evil.example to this machine: DNS rebinding."""
    async with async_playwright() as p:
        rules = "--host-resolver-rules=MAP evil.example 127.0.0.1"
        b = await p.chromium.launch(executable_path=CHROMIUM, args=[*FLAGS, rules])
        yield b
        await b.close()


async def test_a_rebound_name_reads_nothing(
    relays: Any, start_backend: Any, rebinding_browser: Browser
) -> None:
    backend = Backend()
    relay = await started(relays, start_backend, backend)
    await send(relay.url("/orders"), "secret-order", body=b'{"card": "4242"}')
    page = await rebinding_browser.new_page()
    base = f"http://evil.example:{relay.admin_port}"
    for path in ("/api/v1/events", "/api/v1/events/1", "/metrics", "/ui/events"):
        resp = await page.goto(base + path)
        assert resp is not None and resp.status == 403, path
        text = await page.content()
        assert "4242" not in text and "secret-order" not in text, path
    # Same-origin for the page, so a script there could read any answer it got.
    got = await page.evaluate("async () => (await fetch('/api/v1/events')).status")
    assert got == 403
    # The probes answer any name: they reveal nothing.
    resp = await page.goto(base + "/readyz")
    assert resp is not None and resp.status == 200
    assert json.loads(await page.inner_text("body"))["status"] == "ready"
    assert (await refusals(relay))["host"] >= 5
