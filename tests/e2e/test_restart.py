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


async def test_a_second_relay_on_the_same_database_refuses_to_start(
    relays: Any, start_backend: Any
) -> None:
    """Start-up recovery frees every lease in the file, so only one process may use it."""
    backend = await start_backend(Backend())
    first = relays([queue_route(backend)])
    await first.start()
    second = relays([queue_route(backend)], storage={"url": f"sqlite:///{first.db}"})
    assert await second.start_expecting_exit() == 1
    failed = second.logged("startup_failed")
    assert failed, second.stderr()
    assert "in use by another webhook-relay process" in failed[0]["error"]
    assert not second.logged("leases_recovered")

    async with aiohttp.ClientSession() as session:
        # The first one is untouched: still ready, still delivering.
        status, _, _ = await post(session, first.url("/q"), "one-owner")
        assert status == 202
        await wait_for(lambda: backend.received["one-owner"] == 1, 5, "one-owner delivered")
        assert await first.stop() == 0

        # Once it is gone the file is free: the second one starts on the same data.
        await second.start()
        status, headers, _ = await post(session, second.url("/q"), "one-owner")
        assert status == 202
        assert headers.get("Idempotent-Replayed") == "true"
    assert await second.stop() == 0
    assert backend.received["one-owner"] == 1


async def test_the_harness_moves_off_a_port_taken_before_the_first_start(
    relays: Any, start_backend: Any
) -> None:
    import socket

    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)])
    taken = relay.port
    with socket.create_server(("127.0.0.1", taken)):  # someone else binds it first
        await relay.start()
        assert relay.port != taken and "address already in use" in relay.stderr()
    assert await relay.stop() == 0
