"""Sync mode: a duplicate of an original still in flight is told to come back."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from .support import Backend, post, sync_route, wait_for


async def test_duplicate_of_an_in_flight_sync_original_gets_409_then_the_replay(
    relays: Any, start_backend: Any
) -> None:
    backend = Backend()
    backend.hold = asyncio.Event()
    backend.hold_first = 1
    await start_backend(backend)
    relay = relays(
        [
            sync_route(
                backend, timeout={"total": "10s"}, sync={"wait": "300ms", "busy_retry_after": "2s"}
            )
        ]
    )
    await relay.start()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        first = asyncio.create_task(post(session, relay.url("/s"), "busy-1"))
        await wait_for(lambda: backend.received["busy-1"] == 1, 5, "the backend to get busy-1")

        t0 = loop.time()
        status, headers, body = await post(session, relay.url("/s"), "busy-1")
        waited = loop.time() - t0
        assert status == 409, body
        assert headers.get("Retry-After") == "2"
        assert json.loads(body)["error"] == "in_flight"
        assert 0.25 <= waited < 3, f"the duplicate waited {waited:.2f}s (sync.wait is 300ms)"
        assert not first.done()
        assert backend.received["busy-1"] == 1, "the duplicate was forwarded"

        backend.hold.set()
        status, headers, original = await asyncio.wait_for(first, 5)
        assert status == 200
        assert "Idempotent-Replayed" not in headers

        status, headers, again = await post(session, relay.url("/s"), "busy-1")
        assert status == 200
        assert headers.get("Idempotent-Replayed") == "true"
        assert again == original
    assert backend.received["busy-1"] == 1
    assert await relay.stop() == 0
