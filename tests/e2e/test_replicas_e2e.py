"""Two replicas on one PostgreSQL database, as processes: one is killed while it
holds leases, and the other finishes them within 15 s, whatever the attempt timeout."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp
import pytest

from .support import Backend, post, queue_route, wait_for

N = 8


async def holding(
    relays: Any, start_backend: Any, url: str, prefix: str, total: str
) -> tuple[Backend, dict[str, Any], Any, list[str]]:
    """Replica A, started alone, holding N leases: the backend keeps its attempts waiting."""
    backend = Backend()
    backend.hold, backend.hold_first = asyncio.Event(), N
    await start_backend(backend)
    route = queue_route(backend, timeout={"total": total})  # 16 in flight: room for all N
    a = relays([route], storage={"url": url})
    await a.start()
    keys = [f"{prefix}-{i}" for i in range(N)]
    async with aiohttp.ClientSession() as session:
        for key in keys:
            assert (await post(session, a.url("/q"), key))[0] == 202
    await wait_for(lambda: backend.requests == N, 10, "replica A holding every delivery")
    return backend, route, a, keys


@pytest.mark.postgres
async def test_a_killed_replicas_leases_are_finished_by_another_within_15s(
    relays: Any, start_backend: Any, pg_schema: tuple[Any, str, str]
) -> None:
    conn, schema, url = pg_schema
    backend, route, a, keys = await holding(relays, start_backend, url, "fo", "5s")
    async with aiohttp.ClientSession() as session:
        b = relays([route], storage={"url": url})
        await b.start()
        loop = asyncio.get_running_loop()
        await a.kill()
        killed = loop.time()
        assert backend.hold is not None
        backend.hold.set()

        def finished_by_b() -> bool:
            return all(backend.received[k] == 2 for k in keys)

        await wait_for(finished_by_b, 20, "replica B re-sending every delivery A held")
        took = loop.time() - killed
        assert took <= 15, took
        assert sum(backend.received.values()) - N <= N  # re-forwards <= the leases A held
        await wait_for(lambda: bool(b.logged("replica_dead")), 5, "the replica_dead log line")
        (line,) = b.logged("replica_dead")
        assert line["deliveries_returned"] == N

    async def all_delivered() -> bool:
        rows = await conn.fetch(f"SELECT state, attempts FROM {schema}.deliveries")
        return [(r["state"], r["attempts"]) for r in rows] == [("delivered", 2)] * N

    await wait_for(all_delivered, 10, "every delivery recorded once, the lost attempt counted")
    async with aiohttp.ClientSession() as session:
        async with session.get(b.admin_url("/api/v1/replicas")) as resp:
            doc = await resp.json()
        assert [(r["this"], r["state"], r["leases"]) for r in doc["replicas"]] == [
            (True, "live", 0)
        ]

    assert await b.stop() == 0
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.replicas") == 0  # deregistered


@pytest.mark.postgres
async def test_a_stopped_replica_cannot_complete_what_another_took_over(
    relays: Any, start_backend: Any, pg_schema: tuple[Any, str, str]
) -> None:
    conn, schema, url = pg_schema
    backend, route, a, keys = await holding(relays, start_backend, url, "st", "30s")
    b = relays([route], storage={"url": url})
    await b.start()
    a.signal(signal.SIGSTOP)  # paused, not dead: its attempts are still on the wire
    try:
        await wait_for(lambda: bool(b.logged("replica_dead")), 20, "B declaring A dead")
        await wait_for(
            lambda: all(backend.answered[k] >= 1 for k in keys), 10, "B delivering A's work"
        )
    finally:
        a.signal(signal.SIGCONT)
    assert backend.hold is not None
    backend.hold.set()  # A's held attempts are answered now, late
    await wait_for(lambda: len(a.logged("lease_lost")) == N, 15, "A's late outcomes fenced")
    await wait_for(lambda: bool(a.logged("replica_declared_dead")), 10, "A told it was dead")

    async def recorded_by_b() -> bool:
        rows = await conn.fetch(f"SELECT state, attempts FROM {schema}.deliveries")
        return [(r["state"], r["attempts"]) for r in rows] == [("delivered", 2)] * N

    await wait_for(recorded_by_b, 10, "B's outcomes kept, A's not written over them")
    assert await a.stop() == 0 and await b.stop() == 0


@pytest.mark.postgres
async def test_duplicates_split_across_replicas_reach_the_backend_once(
    relays: Any, start_backend: Any, pg_schema: tuple[Any, str, str]
) -> None:
    _, _, url = pg_schema
    backend = await start_backend(Backend())
    route = queue_route(backend)
    a, b = relays([route], storage={"url": url}), relays([route], storage={"url": url})
    await a.start()
    await b.start()
    keys = [f"split-{i}" for i in range(50)]
    async with aiohttp.ClientSession() as session:
        for i, key in enumerate(keys):
            first, second = (a, b) if i % 2 else (b, a)
            assert (await post(session, first.url("/q"), key))[0] == 202
            status, headers, _ = await post(session, second.url("/q"), key)
            assert status == 202 and headers.get("Idempotent-Replayed") == "true"
        await wait_for(lambda: backend.distinct == len(keys), 15, "every key delivered")
    assert await a.stop() == 0 and await b.stop() == 0
    assert backend.repeated() == {}
