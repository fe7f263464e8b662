"""``webhook-relay migrate-store``: a SQLite store holding delivered, dead and pending
events (and a pause, and the audit log) copied into an empty PostgreSQL schema;
two replicas started on the copy deliver every pending event once and still absorb
every key the SQLite relay had seen. A second copy into the same schema is refused."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from .support import Backend, deliveries_by_state, post, queue_route, run_cli, wait_for


@pytest.mark.postgres
async def test_a_sqlite_store_moved_to_postgres_keeps_its_dedupe_state(
    relays: Any, start_backend: Any, pg_schema: tuple[Any, str, str]
) -> None:
    conn, schema, url = pg_schema
    backend = await start_backend(Backend())
    down = Backend()
    down.port = 9  # nothing listens: one refused attempt and the delivery is dead
    routes = [
        queue_route(backend),
        queue_route(backend, "held"),
        queue_route(down, "gone", retry={"max_attempts": 1}),
    ]
    old = relays(routes)
    await old.start()
    run = time.time_ns()
    delivered = [f"d-{run}-{n}" for n in range(20)]
    pending = [f"p-{run}-{n}" for n in range(10)]
    async with aiohttp.ClientSession() as s:
        assert (await s.post(old.admin_url("/api/v1/routes/held/pause"), json={})).status == 200
        for key in delivered:
            assert (await post(s, old.url("/q"), key))[0] == 202
        for key in pending:
            assert (await post(s, old.url("/held"), key))[0] == 202
        for n in range(3):
            assert (await post(s, old.url("/gone"), f"x-{run}-{n}"))[0] == 202
    await wait_for(
        lambda: deliveries_by_state(old.db) == {"delivered": 20, "pending": 10, "dead": 3},
        20,
        "delivered, pending and dead events in the SQLite store",
    )
    assert await old.stop() == 0

    code, out = await run_cli("migrate-store", "--from", f"sqlite:///{old.db}", "--to", url)
    assert code == 0, out
    assert "33 events, 33 deliveries, 23 attempts" in out and "1 pauses" in out, out
    assert await conn.fetchval(f"SELECT count(*) FROM {schema}.events") == 33
    code, out = await run_cli("migrate-store", "--from", f"sqlite:///{old.db}", "--to", url)
    assert code == 1 and "not empty (33 events" in out, out

    # Two replicas on the copy: the pause came along, and so did every key.
    a = relays(routes, storage={"url": url})
    b = relays(routes, storage={"url": url})
    await a.start()
    await b.start()
    async with aiohttp.ClientSession() as s:
        for relay, key in ((a, delivered[0]), (b, delivered[1]), (b, pending[0])):
            route = "/held" if key in pending else "/q"
            assert (await post(s, relay.url(route), key))[0] == 202
        assert (await s.post(a.admin_url("/api/v1/routes/held/resume"), json={})).status == 200

    async def settled() -> bool:
        rows = await conn.fetch(f"SELECT state, count(*) FROM {schema}.deliveries GROUP BY state")
        return {r[0]: r[1] for r in rows} == {"delivered": 30, "dead": 3}

    await wait_for(settled, 20, "every pending event delivered, in the store")
    # Once each: the two replicas share the leases; old keys were absorbed as duplicates.
    assert all(backend.received[k] == 1 for k in delivered + pending)
    assert await a.stop() == 0
    assert await b.stop() == 0
