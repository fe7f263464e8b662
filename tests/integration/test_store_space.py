"""Space given back by the SQLite store (incremental auto-vacuum, paced by
housekeeping), the one-time conversion of an older file, and what a sender hears
while a storage cap refuses new events."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.housekeeping import enforce_caps, give_back
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.migrate import load_migrations, migrate_sqlite
from relay.store.sqlite import SQLiteStore
from relay.store.sqlite.space import room_to_convert
from tests.conftest import FakeClock
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, route
from tests.integration.test_store import event

Client = TestClient[web.Request, web.Application]


def file_size(path: Path) -> int:
    return sum(p.stat().st_size for p in (path, path.with_name(path.name + "-wal")) if p.exists())


async def test_space_a_purge_frees_goes_back_to_the_filesystem(
    tmp_path: Path, clock: FakeClock
) -> None:
    store = SQLiteStore(tmp_path / "relay.db", clock=clock)
    await store.open()
    try:
        assert store.auto_vacuum == "incremental"
        for i in range(3000):
            await store.ingest(event(f"k{i}", body=b"x" * 2048))
        await store._db.call(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        full = file_size(store.path)
        # Retention takes them (here: a cap with drop_keys, which open work would survive).
        await store._db.call(lambda c: c.execute("DELETE FROM events").rowcount)
        await store._db.call(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        assert file_size(store.path) >= full  # SQLite keeps the free pages
        returned = await give_back(store)
        await store._db.call(lambda c: c.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall())
        assert returned > 5 * 2**20
        assert file_size(store.path) < full / 4
    finally:
        await store.close()


async def test_an_older_file_converts_once_when_its_disk_has_room(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "relay.db"
    old = sqlite3.connect(path, isolation_level=None)
    migrate_sqlite(old, load_migrations("relay.store.sqlite", "migrations"), clock())
    assert old.execute("PRAGMA auto_vacuum").fetchone()[0] == 0  # as older releases made it
    old.close()
    store = SQLiteStore(path, clock=clock)
    await store.open()
    await store.close()
    assert store.auto_vacuum == "converted"
    check = sqlite3.connect(path)
    assert check.execute("PRAGMA auto_vacuum").fetchone()[0] == 2
    check.close()
    again = SQLiteStore(path, clock=clock)
    await again.open()
    await again.close()
    assert again.auto_vacuum == "incremental"
    # A VACUUM writes a copy: without room for two, it is not tried.
    assert room_to_convert(free=10 * 2**30, size=2**30)
    assert not room_to_convert(free=2**30, size=2**30)


async def test_a_store_at_its_cap_answers_503_store_full(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    public = await make_relay(route(upstream), storage={"max_rows": 2})
    admin = await make_admin(public)
    for key in ("k1", "k2", "k3"):
        assert (await public.post("/hooks/orders", headers={"Idempotency-Key": key})).status == 202
    relay, store = public.app[RELAY], public.app[OWN_STORE]
    await upstream.wait_for(3)
    await enforce_caps(relay, store)  # three keys, all in their window: none may go
    resp = await public.post("/hooks/orders", headers={"Idempotency-Key": "k4"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "60"
    assert (await resp.json())["error"] == "store_full"
    metrics = await (await admin.get("/metrics")).text()
    assert "relay_store_full 1.0" in metrics
    assert 'relay_webhooks_rejected_total{reason="store_full",route="orders"} 1.0' in metrics


async def test_a_sync_route_hears_store_full_too(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    public = await make_relay(route(upstream, "pay", mode="sync"))
    public.app[OWN_STORE].full = "the store is at its cap"
    resp = await public.post("/hooks/pay", headers={"Idempotency-Key": "k1"})
    assert resp.status == 503 and resp.headers["Retry-After"] == "60"
    assert (await resp.json())["error"] == "store_full"
    assert upstream.seen == []
