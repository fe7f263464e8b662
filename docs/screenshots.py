"""Take the README's console screenshots from a real run: ``python docs/screenshots.py``.

Starts a small backend (some of its answers fail) and the relay as a process,
sends webhooks (duplicates, a payload mismatch, a few that go dead, a sync route,
a shadow route), replays one event with a reason, then has Debian's Chromium
(/usr/bin/chromium, through Playwright) save the overview, that event's page, the
shadow route's events and the live tail as PNG files in docs/console/.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import sys
import tempfile
from pathlib import Path

import aiohttp
from aiohttp import web
from playwright.async_api import async_playwright

HERE = Path(__file__).resolve().parent / "console"
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def backend(port: int) -> web.AppRunner:
    seen: dict[str, int] = {}

    async def handle(request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        seen[key] = seen.get(key, 0) + 1
        if "refund" in key:
            return web.json_response({"error": "refunds are switched off"}, status=410)
        if key.endswith("-3") and seen[key] == 1:
            return web.Response(status=503, text="upstream busy, try again")
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", handle)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    return runner


async def main() -> int:
    run = secrets.token_hex(3)
    bport, port, aport = free_port(), free_port(), free_port()
    runner = await backend(bport)
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "relay.yaml"
        config.write_text(
            f"""
listen: "127.0.0.1:{port}"
admin: {{listen: "127.0.0.1:{aport}"}}
storage: {{url: "sqlite:///{tmp}/relay.db"}}
log: {{format: json}}
routes:
  - name: stripe
    path: /hooks/stripe
    upstream: http://127.0.0.1:{bport}/stripe
    idempotency: {{key: ["json:$.id"]}}
    retry: {{initial: 100ms, max: 100ms, max_attempts: 3}}
  - name: github
    path: /hooks/github
    upstreams: [http://127.0.0.1:{bport}/ci, http://127.0.0.1:{bport}/audit]
    idempotency: {{key: ["header:X-GitHub-Delivery"]}}
  - name: payments
    path: /hooks/payments
    upstream: http://127.0.0.1:{bport}/pay
    mode: sync
  - name: mirror
    path: /hooks/mirror
    upstream: http://127.0.0.1:{bport}/mirror
    dedupe: shadow
"""
        )
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "relay",
            "serve",
            "-c",
            str(config),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        try:
            async with aiohttp.ClientSession() as s:
                for _ in range(100):
                    try:
                        async with s.get(f"http://127.0.0.1:{aport}/readyz") as r:
                            if r.status == 200:
                                break
                    except aiohttp.ClientError:
                        pass
                    await asyncio.sleep(0.1)
                for i in range(40):
                    kind = "charge.refunded" if i % 13 == 5 else "invoice.paid"
                    eid = f"evt_{run}_{'refund' if 'refund' in kind else 'pay'}_{i}-{i % 4}"
                    body = {
                        "id": eid,
                        "type": kind,
                        "data": {"object": {"customer": f"cus_{i % 7}", "amount": 1200 + i}},
                    }
                    for copy in range(1 + (i % 5 == 0)):
                        if copy and i == 15:
                            body["data"]["object"]["amount"] += 1  # a payload mismatch
                        await s.post(
                            f"http://127.0.0.1:{port}/hooks/stripe",
                            data=json.dumps(body),
                            headers={
                                "Content-Type": "application/json",
                                "Stripe-Signature": "t=1,v1=redacted-in-the-console",
                            },
                        )
                for i in range(12):
                    await s.post(
                        f"http://127.0.0.1:{port}/hooks/github",
                        data=json.dumps({"action": "opened", "number": i}),
                        headers={
                            "X-GitHub-Delivery": f"{run}-{i}",
                            "X-GitHub-Event": "pull_request",
                        },
                    )
                for i in range(8):
                    for _copy in range(1 + (i % 3 == 0)):
                        for path in ("payments", "mirror"):
                            await s.post(
                                f"http://127.0.0.1:{port}/hooks/{path}",
                                data=json.dumps({"n": i}),
                                headers={"Idempotency-Key": f"{path[:3]}_{run}_{i}"},
                            )
                await asyncio.sleep(2.0)  # retries and dead letters settle
                async with s.get(
                    f"http://127.0.0.1:{aport}/api/v1/events?route=stripe&limit=200"
                ) as r:
                    events = (await r.json())["events"]
            # One that was retried, had a duplicate and a payload mismatch: i = 15.
            shown = max(events, key=lambda e: (e["mismatches"], e["deliveries"][0]["attempts"]))
            async with aiohttp.ClientSession() as s:
                await s.post(
                    f"http://127.0.0.1:{aport}/api/v1/events/{shown['id']}/replay?force=1",
                    json={"reason": "the customer asked for the receipt again"},
                )
                await asyncio.sleep(1.0)  # the replay is delivered
            async with async_playwright() as p:
                browser = await p.chromium.launch(executable_path="/usr/bin/chromium", args=FLAGS)
                page = await browser.new_page(viewport={"width": 1280, "height": 760})
                await page.goto(f"http://127.0.0.1:{aport}/ui/")
                await page.screenshot(path=str(HERE / "overview.png"), full_page=True)
                await page.goto(f"http://127.0.0.1:{aport}/ui/events/{shown['id']}")
                await page.screenshot(path=str(HERE / "event.png"), full_page=True)
                await page.goto(f"http://127.0.0.1:{aport}/ui/events?route=mirror")
                await page.screenshot(path=str(HERE / "shadow.png"), full_page=True)
                await page.set_viewport_size({"width": 1400, "height": 760})
                await page.goto(f"http://127.0.0.1:{aport}/ui/tail")
                await page.wait_for_selector("#tail-status:has-text('last at')")
                await page.screenshot(path=str(HERE / "tail.png"), full_page=True)
                await browser.close()
        finally:
            proc.terminate()
            await asyncio.wait_for(proc.wait(), 10)
            await runner.cleanup()
    print(f"wrote overview.png, event.png, shadow.png and tail.png in {HERE}")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
