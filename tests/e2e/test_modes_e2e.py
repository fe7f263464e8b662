"""Shadow and hybrid with the daemon as a process: SIGHUP from shadow to enforce,
and kill -9 during a hybrid wait."""

from __future__ import annotations

import asyncio
import contextlib
import signal
from typing import Any

import aiohttp

from .support import Backend, deliveries_by_state, post, queue_route, wait_for


async def test_shadow_then_enforce_by_sighup(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend, dedupe="shadow")], shutdown_grace="2s")
    await relay.start()
    keys = [f"sh-{i:03d}" for i in range(100)]
    async with aiohttp.ClientSession() as session:
        for _ in range(3):
            for key in keys:
                status, headers, _ = await post(session, relay.url("/q"), key)
                assert status == 202 and "Idempotent-Replayed" not in headers
        await wait_for(lambda: backend.requests == 300, 20, "every copy delivered")
        assert backend.received == {k: 3 for k in keys}
        async with session.get(relay.admin_url("/metrics")) as resp:
            text = await resp.text()
        line = 'relay_shadow_duplicates_total{key_source="header",route="q"} 200.0'
        assert line in text.splitlines(), [x for x in text.splitlines() if "shadow" in x]

        doc = relay.config()
        doc["routes"][0]["dedupe"] = "enforce"
        relay.rewrite(doc)
        relay.signal(signal.SIGHUP)
        await wait_for(lambda: bool(relay.logged("config_reloaded")), 10, "the reload")
        for key in keys:
            status, headers, _ = await post(session, relay.url("/q"), key)
            assert status == 202 and headers.get("Idempotent-Replayed") == "true"
    assert await relay.stop() == 0
    assert backend.requests == 300  # the copies after the switch were absorbed


async def test_kill_during_a_hybrid_wait_then_the_queue_delivers(
    relays: Any, start_backend: Any
) -> None:
    backend = Backend()
    backend.hold, backend.hold_first = asyncio.Event(), 1  # the first attempt hangs
    await start_backend(backend)
    route = queue_route(backend, mode="hybrid", hybrid={"wait": "5s"}, retry={"initial": "100ms"})
    relay = relays([route])
    await relay.start()
    async with aiohttp.ClientSession() as session:
        sent = asyncio.ensure_future(post(session, relay.url("/q"), "h-1", timeout=20))
        await wait_for(lambda: backend.requests == 1, 10, "the attempt in line")
        await relay.kill()  # during the wait: the event was committed before it went out
        with contextlib.suppress(aiohttp.ClientError):
            await sent
        backend.hold.set()
        await relay.start()
        await wait_for(
            lambda: backend.answered["h-1"] >= 1 and backend.requests >= 2,
            15,
            "the queue's delivery",
        )
        await wait_for(lambda: deliveries_by_state(relay.db) == {"delivered": 1}, 10, "recorded")
        # The sender's retry is a duplicate now: the queue's ack, never a second first delivery.
        status, headers, _ = await post(session, relay.url("/q"), "h-1")
        assert status in (200, 202) and headers.get("Idempotent-Replayed") == "true"
    assert await relay.stop() == 0
