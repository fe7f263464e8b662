"""``relay.store.copy.migrate`` at the store level: a sealed SQLite store's rows read
the same through PostgreSQL with the same key; a store still in use is not copied."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from relay.errors import StoreUnavailable
from relay.store.copy import migrate
from relay.store.postgres import PostgresStore
from relay.store.sealing import Sealer, key_id
from relay.store.sqlite import SQLiteStore
from tests.conftest import STORE_BACKENDS, FakeClock
from tests.integration.test_store import event

KEY = os.urandom(32)


@pytest.mark.postgres
async def test_a_sealed_store_reads_the_same_after_the_move(
    tmp_path: Path, clock: FakeClock
) -> None:
    source = SQLiteStore(tmp_path / "relay.db", clock=clock, sealer=Sealer(KEY))
    await source.open()
    ids = [(await source.ingest(event(f"k{n}"))).event_id for n in range(3)]
    leased = await source.lease_due("orders", "http://127.0.0.1:3000/a", 10, lease_ttl=60)
    assert len(leased) == 3  # held when the relay stopped: returned before the copy
    await source.close()

    async with STORE_BACKENDS["postgres"](tmp_path, clock) as make:
        copied = await migrate(SQLiteStore(source.path, clock=clock), make())  # type: ignore[arg-type]
        assert copied.recovered == 3
        assert copied.counts["events"] == 3 and copied.counts["store_keys"] == 1
        target = make(sealer=Sealer(KEY))
        await target.open()
        try:
            assert await target.key_ids() == [key_id(KEY)]
            for event_id in ids:
                info = await target.get_event(event_id)
                assert info is not None and info.body.startswith(b'{"id": "k')  # type: ignore[union-attr]
            # The next id continues after the copied ones.
            assert (await target.ingest(event("k-new"))).event_id == max(ids) + 1
            leases = await target.lease_due("orders", "http://127.0.0.1:3000/a", 10, lease_ttl=60)
            assert sorted(lease.key for lease in leases) == ["k-new", "k0", "k1", "k2"]
        finally:
            await target.close()


async def test_a_store_in_use_is_not_copied(tmp_path: Path, clock: FakeClock) -> None:
    running = SQLiteStore(tmp_path / "relay.db", clock=clock)
    await running.open()
    nowhere = PostgresStore("postgresql://127.0.0.1:1/never")  # not reached: refused first
    try:
        with pytest.raises(StoreUnavailable) as info:
            await migrate(SQLiteStore(running.path, clock=clock), nowhere)
        assert "relay.db" in str(info.value)
    finally:
        await running.close()
