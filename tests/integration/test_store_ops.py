"""More of the store contract, against every backend: per-key ordering with
dead events, stale-suppression versions, untried finishes, forced replay,
backlog gauges and start-up recovery. test_store.py has the core of it."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from relay.store.base import Attempt, EventFilter, Outcome, RouteBacklog, Store
from tests.integration.test_store import UP_A, UP_B, attempt, deliver, event, kill, lease_one

if TYPE_CHECKING:
    from tests.conftest import FakeClock, StoreMaker


async def test_hold_dead_blocks_later_events_of_the_key(store: Store) -> None:
    await store.ingest(event("k1", ordering_key="cus_1"))
    await kill(store)
    second = await store.ingest(event("k2", ordering_key="cus_1"))
    assert await store.lease_due("orders", UP_A, 10, 30, hold_dead=True) == []
    assert await store.next_due_at("orders", UP_A, hold_dead=True) is None
    assert await store.next_due_at("orders", UP_A) is not None
    (lease,) = await store.lease_due("orders", UP_A, 10, 30)
    assert lease.event_id == second.event_id


async def test_an_older_event_revived_waits_for_the_one_in_flight(store: Store) -> None:
    first = await store.ingest(event("k1", ordering_key="cus_1"))
    await kill(store)
    second = await store.ingest(event("k2", ordering_key="cus_1"))
    newer = await lease_one(store)
    assert newer.event_id == second.event_id
    assert (await store.ingest(event("k1"))).revived == 1
    assert await store.lease_due("orders", UP_A, 10, 30) == []  # one of a key at a time
    assert await store.finish_attempt(newer, attempt(), Outcome("delivered"))
    assert (await lease_one(store)).event_id == first.event_id


async def test_delivered_versions_for_stale_suppression(store: Store) -> None:
    async def lease_and(outcome: str) -> str | None:
        lease = await lease_one(store)
        if outcome == "stale":
            assert await store.finish_attempt(lease, None, Outcome("stale", reason="old"))
        else:
            assert await store.finish_attempt(lease, attempt(), Outcome("delivered"))
        return lease.delivered_version

    await store.ingest(event("v9", ordering_key="cus_1", version="9"))
    await store.ingest(event("v10", ordering_key="cus_1", version="10"))
    await store.ingest(event("v3", ordering_key="cus_1", version="3"))
    stale = await store.ingest(event("v4", ordering_key="cus_1", version="4"))
    await store.ingest(event("none", ordering_key="cus_1"))
    await store.ingest(event("v11", ordering_key="cus_1", version="11"))
    other = await store.ingest(event("other", route="github", ordering_key="cus_1", version="1"))
    assert await lease_and("delivered") is None  # v9: nothing delivered yet
    assert await lease_and("delivered") == "9"  # v10, numbers compare as numbers
    assert await lease_and("delivered") == "10"  # v3 delivered anyway: 10 stays highest
    assert await lease_and("stale") == "10"  # v4
    assert await lease_and("delivered") is None  # an event without a version is not told
    assert await lease_and("delivered") == "10"  # v11
    # Versions are per route (and upstream): github's cus_1 knows nothing of orders'.
    (lease,) = await store.lease_due("github", UP_A, 10, 30)
    assert (lease.event_id, lease.delivered_version) == (other.event_id, None)
    info = await store.get_event(stale.event_id)
    assert info is not None
    (d,) = info.deliveries
    assert (d.state, d.attempts, d.reason, info.attempts) == ("stale", 0, "old", ())


async def test_remembered_versions_go_with_the_dedupe_window(
    store: Store, clock: FakeClock
) -> None:
    await store.ingest(event("v1", ordering_key="cus_1", version="1"))
    await deliver(store)
    clock.advance(100)
    assert await store.purge_expired(clock.now - 50, clock.now - 50, 100) == 1
    await store.ingest(event("v0", ordering_key="cus_1", version="0"))
    assert (await lease_one(store)).delivered_version is None


async def test_a_lease_given_back_untried_keeps_its_attempts(
    store: Store, clock: FakeClock
) -> None:
    r = await store.ingest(event("k1"))
    lease = await lease_one(store)
    assert await store.finish_attempt(lease, attempt(503), Outcome("pending", clock.now))
    lease = await lease_one(store)
    assert await store.finish_attempt(lease, None, Outcome("pending", clock.now + 5))
    info = await store.get_event(r.event_id)
    assert info is not None
    (d,) = info.deliveries
    assert (d.state, d.attempts, d.last_status, d.next_attempt_at) == (
        "pending",
        1,
        503,
        clock.now + 5,
    )
    assert len(info.attempts) == 1


async def test_requeue_all_replays_everything_but_in_flight_and_dropped(
    store: Store, clock: FakeClock
) -> None:
    t0 = clock.now
    done = await store.ingest(event("done"))
    await deliver(store)
    dead = await store.ingest(event("dead"))
    await kill(store)
    dropped = await store.ingest(event("dropped"))
    await deliver(store)
    flying = await store.ingest(event("flying"))
    in_flight = await lease_one(store)
    clock.advance(10)
    assert await store.drop_payloads(t0 + 1, 10) == 2  # done and dropped
    # Done's body too: requeue_all skips dropped payloads, so put one back.
    await store.purge(EventFilter(ids=(done.event_id,)))
    done = await store.ingest(event("done"))
    await deliver(store)
    clock.advance(10)

    assert await store.requeue_all(EventFilter()) == 2  # done (again) and dead
    leases = await store.lease_due("orders", UP_A, 10, 30)
    assert sorted(x.event_id for x in leases) == sorted([done.event_id, dead.event_id])
    assert {(x.attempts, x.received_at) for x in leases} == {(0, clock.now)}  # a fresh window
    info = await store.get_event(dropped.event_id)
    assert info is not None and info.deliveries[0].state == "delivered"
    assert await store.finish_attempt(in_flight, attempt(), Outcome("delivered"))
    assert in_flight.event_id == flying.event_id


async def test_backlog_and_open_deliveries(store: Store, clock: FakeClock) -> None:
    assert await store.backlog() == {} and await store.open_deliveries() == {}
    await store.ingest(event("a", upstreams=(UP_A, UP_B), received_at=100.0))
    await store.ingest(event("b", received_at=200.0))
    await store.ingest(event("c", received_at=300.0))
    await store.ingest(event("g", route="github", received_at=50.0))
    await deliver(store, "github")
    await lease_one(store, upstream=UP_B)  # a: in flight to B, pending to A
    leases = await store.lease_due("orders", UP_A, 3, 30)
    assert await store.finish_attempt(leases[2], attempt(400), Outcome("dead", reason="400"))
    assert await store.finish_attempt(leases[1], attempt(503), Outcome("pending", clock.now))
    # a: in flight to both; b: pending; c: dead.
    assert await store.backlog() == {
        "orders": RouteBacklog("orders", pending=1, in_flight=1, dead=1, oldest_open_at=100.0)
    }
    assert await store.open_deliveries() == {("orders", UP_A): 2, ("orders", UP_B): 1}


async def test_recover_returns_expired_leases_and_counts_the_lost_attempt(
    backend: str, store: Store, clock: FakeClock
) -> None:
    expired = await store.ingest(event("expired"))
    await store.ingest(event("live"))
    await store.lease_due("orders", UP_A, 1, lease_ttl=5)
    await store.lease_due("orders", UP_A, 1, lease_ttl=3600)
    clock.advance(10)
    # SQLite is one process per file: every lease is orphaned. A shared
    # PostgreSQL can only tell by expiry. ("remote" serves a SQLite store.)
    assert await store.recover() == (2 if backend in ("sqlite", "remote") else 1)
    info = await store.get_event(expired.event_id)
    assert info is not None
    assert (info.deliveries[0].state, info.deliveries[0].attempts) == ("pending", 1)


async def test_revived_delivery_gets_a_fresh_retry_window(store: Store, clock: FakeClock) -> None:
    await store.ingest(event("k1"))
    await kill(store)
    clock.advance(3600)
    assert (await store.ingest(event("k1"))).revived == 1
    assert (await lease_one(store)).received_at == clock.now


async def test_max_batch_bounds_a_group_commit(make_local_store: StoreMaker) -> None:
    store = make_local_store(max_batch=4)
    await store.open()
    try:
        results = await asyncio.gather(*(store.ingest(event(f"k{i}")) for i in range(20)))
        assert all(r.first for r in results)
        stats = store.stats  # type: ignore[attr-defined]
        assert stats.rows == 20 and stats.batches >= 5 and stats.last_batch_size <= 4
    finally:
        await store.close()


async def test_attempt_log_keeps_errors_and_timing(store: Store, clock: FakeClock) -> None:
    r = await store.ingest(event("k1"))
    lease = await lease_one(store)
    failed = Attempt(started_at=123.5, duration_ms=7.25, status=None, error="connect: refused")
    assert await store.finish_attempt(lease, failed, Outcome("pending", clock.now))
    info = await store.get_event(r.event_id)
    assert info is not None
    (a,) = info.attempts
    assert (a.started_at, a.duration_ms, a.status, a.error) == (
        123.5,
        7.25,
        None,
        "connect: refused",
    )
    assert info.deliveries[0].last_error == "connect: refused"


async def test_concurrent_finishes_each_get_their_own_answer(
    store: Store, clock: FakeClock
) -> None:
    """Finishes may share a transaction (group commit); each is still fenced,
    logged and versioned on its own."""
    ids = [(await store.ingest(event(f"k{i}"))).event_id for i in range(4)]
    v1 = await store.ingest(event("v1", ordering_key="cus_1", version="7"))
    v2 = await store.ingest(event("v2", ordering_key="cus_2", version="3"))
    stale_lease = (await store.lease_due("orders", UP_A, 1, lease_ttl=5))[0]
    clock.advance(6)
    assert await store.release_expired_leases() == 1
    leases = {x.event_id: x for x in await store.lease_due("orders", UP_A, 10, 30)}
    assert sorted(leases) == sorted([*ids, v1.event_id, v2.event_id])
    done = await asyncio.gather(
        store.finish_attempt(stale_lease, attempt(), Outcome("delivered")),
        store.finish_attempt(leases[ids[0]], attempt(), Outcome("delivered")),
        store.finish_attempt(leases[ids[1]], None, Outcome("pending", clock.now + 9)),
        store.finish_attempt(leases[ids[2]], attempt(410), Outcome("dead", reason="http 410")),
        store.finish_attempt(leases[ids[3]], attempt(503), Outcome("pending", clock.now + 9)),
        store.finish_attempt(leases[v1.event_id], attempt(), Outcome("delivered")),
        store.finish_attempt(leases[v2.event_id], attempt(), Outcome("delivered")),
    )
    assert done == [False, True, True, True, True, True, True]

    async def delivery(event_id: int) -> tuple[str, int, int | None, int]:
        info = await store.get_event(event_id)
        assert info is not None
        (d,) = info.deliveries
        return d.state, d.attempts, d.last_status, len(info.attempts)

    # The expired lease counts as one lost attempt; the stale holder logged nothing.
    assert await delivery(ids[0]) == ("delivered", 2, 200, 1)
    assert await delivery(ids[1]) == ("pending", 0, None, 0)
    assert await delivery(ids[2]) == ("dead", 1, 410, 1)
    assert await delivery(ids[3]) == ("pending", 1, 503, 1)
    await store.ingest(event("v1b", ordering_key="cus_1", version="8"))
    await store.ingest(event("v2b", ordering_key="cus_2", version="4"))
    got = {
        x.ordering_key: x.delivered_version for x in await store.lease_due("orders", UP_A, 9, 30)
    }
    assert got == {"cus_1": "7", "cus_2": "3"}


async def test_a_lease_finished_twice_at_once_counts_once(store: Store) -> None:
    r = await store.ingest(event("k1"))
    lease = await lease_one(store)
    done = await asyncio.gather(
        store.finish_attempt(lease, attempt(), Outcome("delivered")),
        store.finish_attempt(lease, attempt(500), Outcome("dead", reason="late")),
    )
    assert done == [True, False]
    info = await store.get_event(r.event_id)
    assert info is not None and len(info.attempts) == 1
    assert (info.deliveries[0].state, info.deliveries[0].attempts) == ("delivered", 1)
