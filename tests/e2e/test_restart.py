"""Idempotency state lives in the store, so it outlives the process."""

from __future__ import annotations

import json
from typing import Any

import aiohttp

from .support import Backend, post, queue_route, sync_route, wait_for


async def test_dedupe_survives_restart(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend), sync_route(backend)])
    await relay.start()
    async with aiohttp.ClientSession() as session:
        status, headers, _ = await post(session, relay.url("/q"), "dup-q")
        assert status == 202
        assert "Idempotent-Replayed" not in headers
        status, headers, first_sync = await post(session, relay.url("/s"), "dup-s")
        assert status == 200
        assert "Idempotent-Replayed" not in headers
        await wait_for(lambda: backend.received["dup-q"] == 1, 5, "dup-q delivered")

        assert await relay.stop() == 0
        await relay.start()

        status, headers, _ = await post(session, relay.url("/q"), "dup-q")
        assert status == 202
        assert headers.get("Idempotent-Replayed") == "true"
        status, headers, again = await post(session, relay.url("/s"), "dup-s")
        assert status == 200
        assert headers.get("Idempotent-Replayed") == "true"
        assert json.loads(again) == json.loads(first_sync)

        # A fresh event goes through, so the dispatcher is running: had the
        # duplicate been queued, it would have had its chance by now.
        status, _, _ = await post(session, relay.url("/q"), "fresh")
        assert status == 202
        await wait_for(lambda: backend.received["fresh"] == 1, 5, "the fresh event delivered")
    assert backend.received["dup-q"] == 1
    assert backend.received["dup-s"] == 1
    assert await relay.stop() == 0
