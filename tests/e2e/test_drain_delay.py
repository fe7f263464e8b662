"""SIGTERM with ``drain_delay``: readyz fails at once (on both listeners) while
webhooks are still served, each answer closing its connection, so a load balancer
moves senders away before the listener closes; then the usual drain, exit 0."""

from __future__ import annotations

import asyncio
import signal
import time
from typing import Any

import aiohttp
import pytest

from .support import Backend, connect_refused, deliveries_by_state, post, queue_route, wait_for

DELAY = 2.0


async def _status(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, (await resp.json())["status"]


@pytest.mark.parametrize("workers", [0, 2])
async def test_sigterm_fails_readyz_and_serves_on_for_the_drain_delay(
    relays: Any, start_backend: Any, workers: int
) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], drain_delay=f"{DELAY}s", workers=workers)
    await relay.start()
    loop = asyncio.get_running_loop()
    # Kept-alive connections, as a balancer's: the answers say when to close them.
    async with aiohttp.ClientSession() as s:
        assert await _status(s, relay.url("/readyz")) == (200, "ready")
        status, headers, _ = await post(s, relay.url("/q"), f"before-{time.time_ns()}")
        assert status == 202
        assert headers.get("Connection", "").lower() != "close"

        signalled = loop.time()
        relay.signal(signal.SIGTERM)

        async def failing() -> bool:
            return (await _status(s, relay.url("/readyz")))[0] == 503

        await wait_for(failing, 1.0, "the webhook listener's readyz to fail")
        assert await _status(s, relay.admin_url("/readyz")) == (503, "draining")
        # Still serving, and every answer ends its connection.
        key = f"during-{time.time_ns()}"
        status, headers, _ = await post(s, relay.url("/q"), key)
        assert loop.time() - signalled < DELAY, "the check came too late to mean anything"
        assert status == 202
        assert headers["Connection"].lower() == "close"
        assert not connect_refused(relay.port)

        rc = await relay.wait_exit(DELAY + 10)
        took = loop.time() - signalled
    assert rc == 0
    assert took >= DELAY
    # What was acked during the delay was stored, and delivered or left pending.
    states = deliveries_by_state(relay.db)
    assert sum(states.values()) == 2, states
    assert set(states) <= {"delivered", "pending"}
    assert relay.logged("relay_stopped")


async def test_a_second_sigterm_cuts_the_delay_short(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], drain_delay="30s")
    await relay.start()
    loop = asyncio.get_running_loop()
    relay.signal(signal.SIGTERM)
    async with aiohttp.ClientSession() as s:

        async def failing() -> bool:
            return (await _status(s, relay.admin_url("/readyz")))[0] == 503

        await wait_for(failing, 2.0, "readyz to fail")
    started = loop.time()
    relay.signal(signal.SIGTERM)
    assert await relay.wait_exit(10) == 0
    assert loop.time() - started < 10
