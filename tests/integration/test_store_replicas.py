"""Replicas in the store: heartbeats, and the leases of a dead one returned at once."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from relay.store.base import Acquired, Outcome, Store
from tests.conftest import STORE_BACKENDS
from tests.integration.test_store import UP_A, attempt, event, lease_one

if TYPE_CHECKING:
    from tests.conftest import FakeClock, StoreMaker


async def test_a_process_registers_heartbeats_and_leaves(store: Store, clock: FakeClock) -> None:
    assert await store.heartbeat()
    await store.ingest(event("k1"))
    await lease_one(store)
    (me,) = await store.replicas()
    assert me.id == store.replica_id and me.leases == 1
    clock.advance(5)
    assert await store.heartbeat()
    (me,) = await store.replicas()
    assert me.heartbeat_at == clock.now
    assert await store.reap_dead_replicas(clock.now + 60) == []  # never itself
    await store.deregister()
    assert await store.replicas() == []


@pytest.mark.postgres
async def test_a_dead_replicas_leases_go_back_at_once(tmp_path: Path, clock: FakeClock) -> None:
    # Replicas share a database only on PostgreSQL (SQLite is one process per file).
    async with STORE_BACKENDS["postgres"](tmp_path, clock) as make_store:
        await _two_replicas(make_store, clock)


async def _two_replicas(make_store: StoreMaker, clock: FakeClock) -> None:
    a, b = make_store(), make_store()
    await a.open()
    await b.open()
    try:
        assert await a.heartbeat() and await b.heartbeat()
        await a.ingest(event("k1"))
        await a.ingest(event("k2"))
        held = await a.lease_due("orders", UP_A, 10, lease_ttl=3600)
        sync = await a.claim_sync(event("s1", upstreams=()), 3600)
        assert isinstance(sync, Acquired)
        (ra,) = [r for r in await b.replicas() if r.id == a.replica_id]
        assert ra.leases == 2
        clock.advance(11)
        assert await b.heartbeat()
        reaped = await b.reap_dead_replicas(clock.now - 10)
        assert [(r.id, n) for r, n in reaped] == [(a.replica_id, 2)]
        assert await b.reap_dead_replicas(clock.now - 10) == []  # once
        again = await b.lease_due("orders", UP_A, 10, lease_ttl=30)
        assert sorted(x.event_id for x in again) == sorted(x.event_id for x in held)
        assert {x.attempts for x in again} == {1}  # the lost attempt counted
        # Fencing: the old holder's late answer cannot overwrite the new lease's.
        assert not await a.finish_attempt(held[0], attempt(), Outcome("delivered"))
        # Its sync claim is free again, and it learns it was declared dead.
        assert isinstance(await b.claim_sync(event("s1", upstreams=()), 60), Acquired)
        assert not await a.heartbeat()
        assert a.replica_id in {r.id for r in await b.replicas()}
    finally:
        await a.close()
        await b.close()
    # A clean stop deregisters.
    c = make_store()
    await c.open()
    try:
        assert await c.replicas() == []
    finally:
        await c.close()
