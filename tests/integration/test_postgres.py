"""PostgreSQL only: several stores on one database are several relay replicas.

Every test here opens two (or more) ``PostgresStore`` instances on the same
fresh schema, each with its own pool, and makes them race. The contract
itself runs against PostgreSQL in test_store.py and test_store_ops.py.
"""

from __future__ import annotations

import asyncio
import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pytest

from relay.errors import SchemaTooNew, StoreUnavailable
from relay.store import open_store_for_url
from relay.store.base import Acquired, Attempt, Busy, EventFilter, Lease, Outcome, Store
from relay.store.migrate import load_migrations
from relay.store.postgres import PostgresStore
from tests.integration.test_store import UP_A, event

if TYPE_CHECKING:
    from tests.conftest import FakeClock, StoreMaker

pytestmark = pytest.mark.postgres


@pytest.fixture
def backend() -> str:
    return "postgres"


@pytest.fixture
async def replicas(make_store: StoreMaker) -> Any:
    stores = [make_store(), make_store()]
    await asyncio.gather(*(s.open() for s in stores))  # migrating together is safe
    yield stores
    for s in stores:
        await s.close()


def ok() -> Attempt:
    return Attempt(started_at=1_700_000_000.0, duration_ms=1.0, status=200, error=None)


async def test_concurrent_ingests_across_replicas_claim_each_key_once(
    replicas: list[Store],
) -> None:
    a, b = replicas
    # B sends the keys in the opposite order: batches of the two replicas lock
    # shared keys in (route, key) order all the same, so none deadlocks.
    calls = [a.ingest(event(f"k{i % 100}")) for i in range(250)]
    calls += [b.ingest(event(f"k{(249 - i) % 100}")) for i in range(250)]
    random.shuffle(calls)
    results = await asyncio.gather(*calls)
    assert sum(r.first for r in results) == 100
    by_key: dict[int, set[int]] = defaultdict(set)
    for r in results:
        by_key[r.event_id].add(r.first)
    assert len(by_key) == 100 and all(v == {True, False} for v in by_key.values())
    events = await a.list_events(EventFilter(), limit=200)
    assert sum(e.duplicates for e in events) == 400
    assert all(len(e.deliveries) == 1 for e in events)
    assert a.stats.batches < 250 and b.stats.batches < 250  # type: ignore[attr-defined]


async def test_replicas_never_lease_one_delivery_twice(replicas: list[Store]) -> None:
    a, b = replicas
    ids = {(await a.ingest(event(f"k{i}"))).event_id for i in range(300)}
    leased: list[int] = []

    async def worker(store: Store) -> None:
        while batch := await store.lease_due("orders", UP_A, 7, lease_ttl=30):
            leased.extend(lease.event_id for lease in batch)
            await asyncio.sleep(0)

    await asyncio.gather(*(worker(s) for s in (a, b, a, b, a, b)))
    assert len(leased) == len(set(leased)) == 300
    assert set(leased) == ids


async def test_per_key_ordering_holds_across_replicas(replicas: list[Store]) -> None:
    """8 workers on 2 replicas; never two deliveries of a key in flight, each
    key delivered in arrival order, some attempts failing and retried."""
    a, b = replicas
    keys, per_key = 8, 15
    expected: dict[str, list[int]] = defaultdict(list)
    for n in range(per_key):
        for k in range(keys):
            r = await (a if n % 2 else b).ingest(event(f"e{n}-{k}", ordering_key=f"cus_{k}"))
            expected[f"cus_{k}"].append(r.event_id)
    holding: set[str] = set()
    overlaps: list[str] = []
    delivered: dict[str, list[int]] = defaultdict(list)
    rng = random.Random(7)

    async def send(store: Store, lease: Lease) -> None:
        key = str(lease.ordering_key)
        if key in holding:
            overlaps.append(key)
        holding.add(key)
        await asyncio.sleep(rng.uniform(0, 0.003))
        # Let go before finishing: the next lease of the key can only follow
        # this finish's commit, never precede it.
        holding.discard(key)
        if rng.random() < 0.2:  # a retryable failure, due again at once
            outcome = Outcome("pending", next_attempt_at=store.clock())
        else:
            outcome = Outcome("delivered")
            delivered[key].append(lease.event_id)
        assert await store.finish_attempt(lease, ok(), outcome)

    async def worker(store: Store) -> None:
        idle = 0
        while idle < 30:
            batch = await store.lease_due("orders", UP_A, 3, lease_ttl=30)
            idle = 0 if batch else idle + 1
            await asyncio.gather(*(send(store, lease) for lease in batch))
            await asyncio.sleep(0.001 if not batch else 0)

    await asyncio.wait_for(asyncio.gather(*(worker(s) for s in (a, b) * 4)), 60)
    assert overlaps == []
    assert dict(delivered) == dict(expected)
    assert await a.undelivered_counts() == {}


async def test_an_older_event_requeued_mid_lease_waits_for_the_newer_one(
    replicas: list[Store],
) -> None:
    """The race the lease lock exists for: replica A leases event 2 of a key
    while replica B requeues the key's dead event 1 and leases at once. B must
    see A's lease (then event 1 waits), never lease event 1 beside it."""
    a, b = replicas
    old = await a.ingest(event("e1", ordering_key="cus_1"))
    (lease,) = await a.lease_due("orders", UP_A, 10, lease_ttl=30)
    assert await a.finish_attempt(lease, ok(), Outcome("dead", reason="http 400"))
    new = await a.ingest(event("e2", ordering_key="cus_1"))
    async with a.db.acquire() as conn:  # type: ignore[attr-defined]
        # Hold every ordered lease's COMMIT for a moment (after its UPDATE ran).
        await conn.execute(
            "CREATE FUNCTION slow_commit() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_sleep(1); RETURN NULL; END $$;"
            "CREATE CONSTRAINT TRIGGER slow_commit AFTER UPDATE ON deliveries"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW"
            " WHEN (NEW.state = 'in_flight' AND NEW.ordering_key IS NOT NULL)"
            " EXECUTE FUNCTION slow_commit()"
        )
    leasing = asyncio.ensure_future(a.lease_due("orders", UP_A, 10, lease_ttl=30))
    async with b.db.acquire() as conn:  # type: ignore[attr-defined]
        for _ in range(200):  # until A's lease of event 2 is done but not committed
            if await conn.fetchval(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE wait_event = 'PgSleep' AND datname = current_database()"
            ):
                break
            await asyncio.sleep(0.01)
        else:
            pytest.fail("the lease never reached its COMMIT")
    assert not leasing.done()
    assert await b.requeue(EventFilter(ids=(old.event_id,))) == 1
    assert await b.lease_due("orders", UP_A, 10, lease_ttl=30) == []
    assert [x.event_id for x in await leasing] == [new.event_id]
    assert await b.next_due_at("orders", UP_A) is None  # event 1 waits for event 2


async def test_finishes_share_transactions(store: Store) -> None:
    for i in range(100):
        await store.ingest(event(f"k{i}"))
    leases = await store.lease_due("orders", UP_A, 100, lease_ttl=30)
    done = await asyncio.gather(
        *(store.finish_attempt(x, ok(), Outcome("delivered")) for x in leases)
    )
    assert all(done) and len(done) == 100
    stats = store.finish_stats  # type: ignore[attr-defined]
    assert stats.rows == 100 and stats.batches < 100
    assert await store.undelivered_counts() == {}


async def test_sync_claim_from_two_replicas_acquires_once(
    replicas: list[Store], clock: FakeClock
) -> None:
    a, b = replicas
    ev = event("s1", upstreams=())
    claims = await asyncio.gather(*(s.claim_sync(ev, lease_ttl=10) for s in (a, b) * 10))
    assert sum(isinstance(c, Acquired) for c in claims) == 1
    assert sum(isinstance(c, Busy) for c in claims) == 19
    (holder,) = (c for c in claims if isinstance(c, Acquired))

    clock.advance(11)  # the holder died: both replicas race to take over
    claims = await asyncio.gather(*(s.claim_sync(ev, lease_ttl=10) for s in (a, b) * 10))
    winners = [c for c in claims if isinstance(c, Acquired)]
    assert len(winners) == 1 and winners[0].taken_over and winners[0].token != holder.token
    assert not await a.release_sync(holder.event_id, holder.token)  # fenced
    info = await b.get_event(holder.event_id)
    assert info is not None and info.duplicates == 39


async def test_recover_leaves_live_leases_of_other_replicas(
    replicas: list[Store], clock: FakeClock
) -> None:
    a, b = replicas
    first = await a.ingest(event("q1"))
    await a.ingest(event("q2"))
    (live,) = await a.lease_due("orders", UP_A, 1, lease_ttl=60)
    (short,) = await a.lease_due("orders", UP_A, 1, lease_ttl=5)
    claim = await a.claim_sync(event("s1", upstreams=()), lease_ttl=60)
    assert isinstance(claim, Acquired)

    # B starts while A is alive: nothing of A's is returned.
    assert await b.recover() == 0
    clock.advance(10)
    # Only the expired lease; the lost attempt counts, as in SQLite's recovery.
    assert await b.recover() == 1
    assert not await a.finish_attempt(short, ok(), Outcome("delivered"))
    assert await a.finish_attempt(live, ok(), Outcome("delivered"))
    info = await b.get_event(first.event_id)
    assert info is not None and info.deliveries[0].state == "delivered"
    assert isinstance(await b.peek_sync("orders", "s1"), Busy)
    again = await b.lease_due("orders", UP_A, 10, lease_ttl=30)
    assert [(x.event_id, x.attempts) for x in again] == [(short.event_id, 1)]

    clock.advance(60)  # A's sync claim expired: recovery frees it
    assert await b.recover() == 2  # the sync claim and B's own expired lease
    assert await b.peek_sync("orders", "s1") is None


async def test_migrations_once_and_schema_too_new(make_store: StoreMaker) -> None:
    stores = [make_store() for _ in range(4)]
    await asyncio.gather(*(s.open() for s in stores))
    db = stores[0].db  # type: ignore[attr-defined]
    async with db.acquire() as conn:
        rows = await conn.fetch("SELECT version FROM schema_migrations ORDER BY version")
        shipped = [m.version for m in load_migrations("relay.store.postgres", "migrations")]
        assert [r[0] for r in rows] == shipped
        # A newer release's breaking migration: this release must not touch the schema.
        await conn.execute("INSERT INTO schema_migrations VALUES (9999, 'renamed', 0, true)")
    for s in stores:
        await s.close()
    late = make_store()
    with pytest.raises(SchemaTooNew, match=r"migration 9999 \(renamed\) changed it"):
        await late.open()
    assert not await late.ping()


async def test_an_older_replica_keeps_working_on_a_newer_additive_schema(
    make_store: StoreMaker,
) -> None:
    """A rolling upgrade: the first upgraded replica migrated (additively); the ones
    not yet upgraded restart on that schema and keep serving."""
    newer = make_store()
    await newer.open()
    async with newer.db.acquire() as conn:  # type: ignore[attr-defined]
        latest = await conn.fetchval("SELECT max(version) FROM schema_migrations")
        # What the next release may do: a new table, a new column with a default.
        await conn.execute(
            "CREATE TABLE future_notes (id BIGINT PRIMARY KEY, note TEXT);"
            " ALTER TABLE events ADD COLUMN future_flag BOOLEAN NOT NULL DEFAULT FALSE"
        )
        await conn.execute(
            "INSERT INTO schema_migrations VALUES ($1, 'future_notes', 0, false)", latest + 1
        )
    older = make_store()
    await older.open()  # not refused
    got = await older.ingest(event("k-additive"))
    assert got.first
    (lease,) = await older.lease_due("orders", UP_A, 10, lease_ttl=30)
    assert await older.finish_attempt(lease, ok(), Outcome("delivered"))
    info = await newer.get_event(got.event_id)
    assert info is not None and info.deliveries[0].state == "delivered"
    for s in (older, newer):
        await s.close()


async def test_a_failing_commit_fails_the_whole_batch(make_store: StoreMaker) -> None:
    store = make_store()
    await store.open()
    async with store.db.acquire() as conn:  # type: ignore[attr-defined]
        # Checked at COMMIT, the worst place for it to fail.
        await conn.execute(
            "CREATE FUNCTION poison() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN RAISE EXCEPTION 'poisoned'; END $$;"
            "CREATE CONSTRAINT TRIGGER poison AFTER INSERT ON events"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW WHEN (NEW.key = 'poison')"
            " EXECUTE FUNCTION poison()"
        )
    try:
        results = await asyncio.gather(
            *(store.ingest(event(k)) for k in ("a", "b", "poison", "c")), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results), results
        assert "poisoned" in str(results[0])
        assert store.stats.failed_batches == 1 and store.stats.rows == 0  # type: ignore[attr-defined]
        assert await store.list_events(EventFilter(), limit=10) == []
        assert (await store.ingest(event("a"))).first  # the store recovered
    finally:
        await store.close()


async def test_store_survives_killed_connections(make_store: StoreMaker) -> None:
    store = make_store(server_settings={"application_name": "relay-test-kill"})
    await store.open()
    try:
        await store.ingest(event("before"))
        async with store.db.acquire() as conn:  # type: ignore[attr-defined]
            await conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                " WHERE application_name = 'relay-test-kill' AND pid <> pg_backend_pid()"
            )
        failures = 0
        for _ in range(20):  # each dead pooled connection fails once, then is replaced
            try:
                assert (await store.ingest(event("after"))).first
                break
            except StoreUnavailable:
                failures += 1
        else:
            pytest.fail("the store never recovered")
        assert await store.ping()
    finally:
        await store.close()


async def test_nul_in_a_query_string_is_stored_percent_encoded(store: Store) -> None:
    r = await store.ingest(event("nul", query="a=\x00&b=1"))
    (lease,) = await store.lease_due("orders", UP_A, 10, lease_ttl=30)
    assert lease.query == "a=%00&b=1" and lease.event_id == r.event_id


async def test_unreachable_server_is_unavailable_without_leaking_the_password() -> None:
    store = open_store_for_url("postgresql://relay:s3cr%21t@127.0.0.1:1/relay", connect_timeout=2)
    assert isinstance(store, PostgresStore) and "s3cr" not in repr(store)
    with pytest.raises(StoreUnavailable) as caught:
        await store.open()
    assert "127.0.0.1:1/relay" in str(caught.value)
    assert "s3cr" not in str(caught.value)
    assert not await store.ping()
    with pytest.raises(StoreUnavailable):
        await store.ingest(event("k"))
    await store.close()
    with pytest.raises(ValueError):
        PostgresStore("mysql://db/relay")
