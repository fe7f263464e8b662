"""The store contract, run against every backend on real databases."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import stat
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from relay.errors import SchemaTooNew, StoreUnavailable
from relay.store import open_store_for_url
from relay.store.base import (
    Acquired,
    Attempt,
    Busy,
    Completed,
    DeliveryStore,
    EventFilter,
    Lease,
    NewEvent,
    Outcome,
    Store,
    StoredResponse,
)
from relay.store.migrate import load_migrations, migrate_sqlite
from relay.store.sqlite import SQLiteStore

if TYPE_CHECKING:
    from tests.conftest import FakeClock, StoreMaker

UP_A = "http://127.0.0.1:3000/a"
UP_B = "http://127.0.0.1:3000/b"


def event(
    key: str,
    *,
    route: str = "orders",
    fingerprint: str = "fp-1",
    upstreams: tuple[str, ...] = (UP_A,),
    **extra: Any,
) -> NewEvent:
    fields: dict[str, Any] = {
        "route": route,
        "key": key,
        "key_source": "header:Idempotency-Key",
        "fingerprint": fingerprint,
        "method": "POST",
        "path": f"/hooks/{route}",
        "query": "a=1&b=2",
        "headers": (("Content-Type", "application/json"), ("X-Dup", "1"), ("X-Dup", "2")),
        "body": b'{"id": "' + key.encode() + b'", "bin": "\x00\xff"}',
        "received_at": 1_700_000_000.0,
        "upstreams": upstreams,
    }
    fields.update(extra)
    return NewEvent(**fields)


def attempt(status: int | None = 200, error: str | None = None) -> Attempt:
    return Attempt(started_at=1_700_000_000.0, duration_ms=12.5, status=status, error=error)


async def lease_one(store: DeliveryStore, route: str = "orders", upstream: str = UP_A) -> Lease:
    leases = await store.lease_due(route, upstream, 10, lease_ttl=30)
    assert len(leases) == 1
    return leases[0]


async def deliver(store: Store, route: str = "orders", upstream: str = UP_A) -> None:
    lease = await lease_one(store, route, upstream)
    assert await store.finish_attempt(lease, attempt(), Outcome("delivered"))


async def kill(store: Store, route: str = "orders", upstream: str = UP_A) -> None:
    lease = await lease_one(store, route, upstream)
    assert await store.finish_attempt(lease, attempt(400), Outcome("dead", reason="http 400"))


# --- ingest -------------------------------------------------------------------


async def test_first_ingest_then_duplicates(store: Store) -> None:
    first = await store.ingest(event("k1"))
    assert first.first and first.stored_fingerprint == "fp-1" and first.revived == 0

    same = await store.ingest(event("k1"))
    assert not same.first and same.event_id == first.event_id
    assert not same.mismatch("fp-1")

    other = await store.ingest(event("k1", fingerprint="fp-2"))
    assert not other.first and other.stored_fingerprint == "fp-1"
    assert other.mismatch("fp-2")

    info = await store.get_event(first.event_id)
    assert info is not None
    assert (info.duplicates, info.mismatches) == (2, 1)
    assert info.body == event("k1").body
    assert info.headers == event("k1").headers
    assert (info.method, info.path, info.query) == ("POST", "/hooks/orders", "a=1&b=2")
    assert info.sync_state is None


async def test_keys_are_scoped_per_route(store: Store) -> None:
    a = await store.ingest(event("same", route="stripe"))
    b = await store.ingest(event("same", route="github"))
    assert a.first and b.first and a.event_id != b.event_id


async def test_concurrent_ingests_share_batches(store: Store) -> None:
    results = await asyncio.gather(*(store.ingest(event(f"k{i % 100}")) for i in range(500)))
    assert sum(r.first for r in results) == 100
    ids: dict[str, set[int]] = {}
    for i, r in enumerate(results):
        ids.setdefault(f"k{i % 100}", set()).add(r.event_id)
    assert all(len(v) == 1 for v in ids.values())
    stats = store.stats  # type: ignore[attr-defined]
    assert stats.rows == 500
    assert 1 <= stats.batches < 500
    for info in await store.list_events(EventFilter(), limit=200):
        assert info.duplicates == 4
        assert len(info.deliveries) == 1


async def test_copies_inside_one_batch_count_as_duplicates(store: Store) -> None:
    new = await asyncio.gather(*(store.ingest(event("k", fingerprint=f)) for f in "aab"))
    assert [r.first for r in new] == [True, False, False]
    assert {r.stored_fingerprint for r in new} == {"a"}
    seen = await asyncio.gather(*(store.ingest(event("k", fingerprint=f)) for f in "abb"))
    assert not any(r.first for r in seen)
    info = await store.get_event(new[0].event_id)
    assert info is not None
    # 2 copies in the first batch, 3 in the second; every "b" is a mismatch.
    assert (info.duplicates, info.mismatches) == (5, 3)


async def test_ingest_is_durable_across_reopen(make_store: StoreMaker) -> None:
    store = make_store()
    await store.open()
    first = await store.ingest(event("k1"))
    await store.close()
    await store.close()  # twice is fine

    reopened = make_store()
    await reopened.open()
    try:
        again = await reopened.ingest(event("k1"))
        assert not again.first and again.event_id == first.event_id
        info = await reopened.get_event(first.event_id)
        assert info is not None and info.body == event("k1").body
    finally:
        await reopened.close()


async def test_close_flushes_queued_ingests(make_store: StoreMaker) -> None:
    store = make_store()
    await store.open()
    tasks = [asyncio.ensure_future(store.ingest(event(f"k{i}"))) for i in range(50)]
    await asyncio.sleep(0)  # let every task queue its event
    await store.close()
    assert all(t.result().first for t in tasks)
    with pytest.raises(StoreUnavailable):
        await store.ingest(event("late"))

    reopened = make_store()
    await reopened.open()
    try:
        assert len(await reopened.list_events(EventFilter(), limit=100)) == 50
    finally:
        await reopened.close()


async def test_undelivered_counts(store: Store) -> None:
    for i in range(3):
        await store.ingest(event(f"o{i}", upstreams=(UP_A, UP_B)))
    await store.ingest(event("g1", route="github"))
    await deliver(store, "github")
    await store.lease_due("orders", UP_A, 1, lease_ttl=30)  # in flight still counts
    assert await store.undelivered_counts() == {"orders": 3}


# --- delivery -----------------------------------------------------------------


async def test_one_delivery_per_upstream(store: Store) -> None:
    r = await store.ingest(event("k1", upstreams=(UP_A, UP_B)))
    info = await store.get_event(r.event_id)
    assert info is not None
    assert sorted((d.upstream, d.state, d.attempts) for d in info.deliveries) == [
        (UP_A, "pending", 0),
        (UP_B, "pending", 0),
    ]
    a, b = await lease_one(store, upstream=UP_A), await lease_one(store, upstream=UP_B)
    assert a.event_id == b.event_id == r.event_id and a.token != b.token
    assert a.body == event("k1").body and a.headers == event("k1").headers
    assert (a.key, a.method, a.query, a.attempts) == ("k1", "POST", "a=1&b=2", 0)


async def test_lease_due_respects_limit_due_time_route_and_upstream(
    store: Store, clock: FakeClock
) -> None:
    ids = [(await store.ingest(event(f"k{i}"))).event_id for i in range(5)]
    await store.ingest(event("other-route", route="github"))
    assert await store.lease_due("orders", UP_B, 10, lease_ttl=30) == []

    first = await store.lease_due("orders", UP_A, 2, lease_ttl=30)
    assert [lease.event_id for lease in first] == ids[:2]
    # Send the first back with a retry in a minute: it is no longer due.
    retry = Outcome("pending", next_attempt_at=clock.now + 60)
    assert await store.finish_attempt(first[0], attempt(503), retry)

    rest = await store.lease_due("orders", UP_A, 10, lease_ttl=30)
    assert [lease.event_id for lease in rest] == ids[2:]
    assert await store.lease_due("orders", UP_A, 10, lease_ttl=30) == []
    assert await store.next_due_at("orders", UP_A) == clock.now + 60

    clock.advance(60)
    again = await lease_one(store)
    assert (again.event_id, again.attempts) == (ids[0], 1)
    assert await store.next_due_at("orders", UP_A) is None
    assert [x.route for x in await store.lease_due("github", UP_A, 10, 30)] == ["github"]


async def test_finish_attempt_is_fenced_by_the_lease(store: Store, clock: FakeClock) -> None:
    r = await store.ingest(event("k1"))
    old = await lease_one(store)
    clock.advance(31)
    assert await store.release_expired_leases() == 1
    assert await store.release_expired_leases() == 0
    new = await lease_one(store)
    assert new.token != old.token
    assert new.attempts == 1  # the expired lease's attempt counts as lost

    assert not await store.finish_attempt(old, attempt(), Outcome("delivered"))
    assert await store.finish_attempt(new, attempt(), Outcome("delivered"))
    assert not await store.finish_attempt(new, attempt(), Outcome("delivered"))

    info = await store.get_event(r.event_id)
    assert info is not None
    (d,) = info.deliveries
    # Two attempts: the lost one (no log row: nobody saw its outcome) and the success.
    assert (d.state, d.attempts, d.last_status) == ("delivered", 2, 200)
    assert len(info.attempts) == 1 and info.attempts[0].delivery_id == d.id


async def test_retry_then_dead_records_every_attempt(store: Store, clock: FakeClock) -> None:
    r = await store.ingest(event("k1"))
    lease = await lease_one(store)
    timeout = attempt(None, "timeout")
    assert await store.finish_attempt(lease, timeout, Outcome("pending", clock.now + 5))
    clock.advance(5)
    lease = await lease_one(store)
    assert lease.attempts == 1
    assert await store.finish_attempt(lease, attempt(422), Outcome("dead", reason="http 422"))

    info = await store.get_event(r.event_id)
    assert info is not None
    (d,) = info.deliveries
    assert (d.state, d.attempts, d.reason, d.last_status) == ("dead", 2, "http 422", 422)
    assert [(a.status, a.error) for a in info.attempts] == [(None, "timeout"), (422, None)]
    assert await store.undelivered_counts() == {}


async def test_dead_event_revived_by_a_duplicate(store: Store) -> None:
    r = await store.ingest(event("k1"))
    await kill(store)
    dup = await store.ingest(event("k1"))
    assert not dup.first and dup.revived == 1
    info = await store.get_event(r.event_id)
    assert info is not None
    (d,) = info.deliveries
    assert (d.state, d.attempts, d.reason) == ("pending", 0, None)
    assert (await lease_one(store)).event_id == r.event_id


async def test_revive_needs_every_delivery_dead_and_the_flag(store: Store) -> None:
    await store.ingest(event("k1", upstreams=(UP_A, UP_B)))
    await kill(store, upstream=UP_A)
    await deliver(store, upstream=UP_B)
    assert (await store.ingest(event("k1"))).revived == 0

    await store.ingest(event("k2"))
    await kill(store)
    assert (await store.ingest(event("k2", revive_dead=False))).revived == 0
    assert await store.undelivered_counts() == {}


async def test_per_key_ordering_holds_later_events(store: Store) -> None:
    first = await store.ingest(event("k1", ordering_key="cus_1"))
    second = await store.ingest(event("k2", ordering_key="cus_1"))
    other = await store.ingest(event("k3", ordering_key="cus_2"))
    leases = await store.lease_due("orders", UP_A, 10, lease_ttl=30)
    assert sorted(lease.event_id for lease in leases) == [first.event_id, other.event_id]
    assert await store.next_due_at("orders", UP_A) is None  # the rest waits on k1
    for lease in leases:
        assert await store.finish_attempt(lease, attempt(), Outcome("delivered"))
    lease = await lease_one(store)
    assert (lease.event_id, lease.ordering_key) == (second.event_id, "cus_1")


# --- sync mode ----------------------------------------------------------------


async def test_sync_claim_busy_then_completed(store: Store, clock: FakeClock) -> None:
    ev = event("s1", upstreams=())
    claim = await store.claim_sync(ev, lease_ttl=30)
    assert isinstance(claim, Acquired) and not claim.taken_over

    busy = await store.claim_sync(replace(ev, fingerprint="fp-2"), lease_ttl=30)
    assert busy == Busy(claim.event_id, "fp-1", clock.now + 30)
    assert await store.peek_sync("orders", "s1") == busy

    response = StoredResponse(201, "application/json", b'{"ok":true}')
    assert await store.complete_sync(claim.event_id, claim.token, response)
    done = await store.claim_sync(ev, lease_ttl=30)
    assert done == Completed(claim.event_id, "fp-1", response)
    assert await store.peek_sync("orders", "s1") == done
    assert not await store.release_sync(claim.event_id, claim.token)

    info = await store.get_event(claim.event_id)
    assert info is not None
    assert (info.sync_state, info.duplicates, info.mismatches) == ("completed", 2, 1)


async def test_sync_takeover_after_lease_expiry(store: Store, clock: FakeClock) -> None:
    ev = event("s1", upstreams=())
    old = await store.claim_sync(ev, lease_ttl=10)
    assert isinstance(old, Acquired)
    clock.advance(10)
    assert isinstance(await store.claim_sync(ev, lease_ttl=10), Busy)  # not yet expired
    clock.advance(0.5)
    new = await store.claim_sync(ev, lease_ttl=10)
    assert isinstance(new, Acquired) and new.taken_over
    assert new.event_id == old.event_id and new.token != old.token

    late = StoredResponse(500, None, b"late")
    assert not await store.complete_sync(old.event_id, old.token, late)
    assert not await store.release_sync(old.event_id, old.token)
    ok = StoredResponse(200, "text/plain", b"", body_omitted=True)
    assert await store.complete_sync(new.event_id, new.token, ok)
    assert await store.peek_sync("orders", "s1") == Completed(new.event_id, "fp-1", ok)


async def test_sync_release_then_reacquire(store: Store) -> None:
    ev = event("s1", upstreams=())
    assert await store.peek_sync("orders", "s1") is None
    claim = await store.claim_sync(ev, lease_ttl=30)
    assert isinstance(claim, Acquired)
    assert not await store.release_sync(claim.event_id, "not-the-token")
    assert not await store.complete_sync(
        claim.event_id, "not-the-token", StoredResponse(200, None, b"")
    )
    assert await store.release_sync(claim.event_id, claim.token)
    assert await store.peek_sync("orders", "s1") is None

    again = await store.claim_sync(ev, lease_ttl=30)
    assert isinstance(again, Acquired) and not again.taken_over
    assert again.token != claim.token


async def test_sync_and_queue_share_the_key(store: Store) -> None:
    claim = await store.claim_sync(event("shared", upstreams=()), lease_ttl=30)
    assert isinstance(claim, Acquired)
    queued = await store.ingest(event("shared"))
    assert not queued.first and queued.event_id == claim.event_id

    first = await store.ingest(event("switched"))
    # The route switched to sync after the event was queued: never forward twice.
    again = await store.claim_sync(event("switched", upstreams=()), lease_ttl=30)
    assert isinstance(again, Completed) and again.event_id == first.event_id


async def test_concurrent_sync_claims_acquire_once(store: Store) -> None:
    claims = await asyncio.gather(
        *(store.claim_sync(event("s1", upstreams=()), lease_ttl=30) for _ in range(20))
    )
    assert sum(isinstance(c, Acquired) for c in claims) == 1
    assert sum(isinstance(c, Busy) for c in claims) == 19


async def test_cancelled_callers_leave_the_store_usable(store: Store) -> None:
    # Cancel at every await point a claim goes through; whatever it got done,
    # the connection must not be left inside a half-finished transaction.
    for n in range(12):
        task = asyncio.ensure_future(store.claim_sync(event(f"s{n}", upstreams=()), 30))
        for _ in range(n):
            await asyncio.sleep(0)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    assert await store.ping()
    assert isinstance(await store.claim_sync(event("after", upstreams=()), 30), Acquired)
    assert (await store.ingest(event("after-queue"))).first


# --- operations ---------------------------------------------------------------


async def test_list_events_filters_and_pages(store: Store) -> None:
    ids = []
    for i in range(6):
        ids.append((await store.ingest(event(f"k{i}", received_at=1000.0 + i))).event_id)
        if i == 0:
            await kill(store)
    await store.ingest(event("g", route="github", received_at=1000.0))

    page = await store.list_events(EventFilter(route="orders"), limit=4)
    assert [e.id for e in page] == ids[::-1][:4]
    assert all(e.attempts == () and len(e.deliveries) == 1 for e in page)
    more = await store.list_events(EventFilter(route="orders"), limit=4, before_id=page[-1].id)
    assert [e.id for e in more] == ids[::-1][4:]

    async def listed(**kw: Any) -> list[int]:
        return sorted(e.id for e in await store.list_events(EventFilter(**kw), limit=100))

    assert await listed(state="dead") == [ids[0]]
    assert await listed(key="k3") == [ids[3]]
    assert await listed(route="orders", since=1002.0, until=1004.0) == ids[2:4]
    assert await listed(ids=(ids[1], ids[5])) == [ids[1], ids[5]]
    assert await listed(ids=()) == []
    assert await store.get_event(10_000) is None


async def test_requeue_and_purge(store: Store) -> None:
    dead = await store.ingest(event("dead"))
    await kill(store)
    pending = await store.ingest(event("pending"))

    assert await store.requeue(EventFilter(key="pending")) == 0
    assert await store.purge(EventFilter()) == 1
    assert await store.get_event(dead.event_id) is None
    assert await store.get_event(pending.event_id) is not None  # pending work stays

    await deliver(store)
    dead2 = await store.ingest(event("dead2"))
    await kill(store)
    assert await store.requeue(EventFilter(state="dead")) == 1
    info = await store.get_event(dead2.event_id)
    assert info is not None and info.deliveries[0].state == "pending"
    assert info.deliveries[0].attempts == 0 and info.deliveries[0].reason is None
    assert await store.purge(EventFilter(ids=(dead2.event_id,))) == 0
    assert await store.purge(EventFilter(ids=(pending.event_id,))) == 1


async def test_purge_expired_keeps_pending_and_young_dead(store: Store, clock: FakeClock) -> None:
    t0 = clock.now
    delivered = await store.ingest(event("delivered"))
    await deliver(store)
    dead = await store.ingest(event("dead"))
    await kill(store)
    pending = await store.ingest(event("pending"))
    sync_done = await store.claim_sync(event("sync-done", upstreams=()), lease_ttl=30)
    assert isinstance(sync_done, Acquired)
    await store.complete_sync(sync_done.event_id, sync_done.token, StoredResponse(200, None, b""))
    sync_live = await store.claim_sync(event("sync-live", upstreams=()), lease_ttl=3600)
    assert isinstance(sync_live, Acquired)
    clock.advance(100)

    # Everything is past the dedupe window, the dead one not past dead retention.
    assert await store.purge_expired(seen_before=t0 + 1, dead_before=t0 - 1, limit=1) == 1
    assert await store.purge_expired(seen_before=t0 + 1, dead_before=t0 - 1, limit=100) == 1
    assert await store.purge_expired(seen_before=t0 + 1, dead_before=t0 - 1, limit=100) == 0
    left = {e.key for e in await store.list_events(EventFilter(), limit=100)}
    assert left == {"dead", "pending", "sync-live"}
    assert await store.get_event(delivered.event_id) is None

    assert await store.purge_expired(seen_before=t0 + 1, dead_before=t0 + 1, limit=100) == 1
    assert await store.get_event(dead.event_id) is None
    assert await store.get_event(pending.event_id) is not None
    # A duplicate refreshes last_seen_at, so the key stays seen for a new window.
    await store.ingest(event("pending"))
    await deliver(store)
    assert await store.purge_expired(seen_before=t0 + 1, dead_before=t0 + 1, limit=100) == 0


async def test_drop_payloads_of_delivered_events(store: Store, clock: FakeClock) -> None:
    t0 = clock.now
    done = await store.ingest(event("done", upstreams=(UP_A, UP_B)))
    await deliver(store, upstream=UP_A)
    waiting = await store.ingest(event("waiting"))
    assert await store.drop_payloads(delivered_before=t0 + 10, limit=10) == 0  # UP_B open
    await deliver(store, upstream=UP_B)
    assert await store.drop_payloads(delivered_before=t0, limit=10) == 0  # not before t0
    clock.advance(5)
    assert await store.drop_payloads(delivered_before=t0 + 10, limit=10) == 1
    info = await store.get_event(done.event_id)
    assert info is not None and info.body is None and info.headers
    info = await store.get_event(waiting.event_id)
    assert info is not None and info.body is not None


async def test_ping(make_store: StoreMaker) -> None:
    store = make_store()
    assert not await store.ping()
    await store.open()
    assert await store.ping()
    await store.close()
    assert not await store.ping()


# --- SQLite specifics ---------------------------------------------------------


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


async def test_sqlite_failing_commit_fails_the_whole_batch(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    # A deferred foreign key violated by key "poison": the INSERTs succeed and
    # the COMMIT itself fails, the worst place for it.
    with _raw(path) as raw:
        raw.executescript(
            "CREATE TABLE poison (parent INTEGER REFERENCES events (id)"
            "  DEFERRABLE INITIALLY DEFERRED);"
            "CREATE TRIGGER poison AFTER INSERT ON events WHEN NEW.key = 'poison'"
            "  BEGIN INSERT INTO poison VALUES (-1); END;"
        )
    try:
        results = await asyncio.gather(
            *(store.ingest(event(k)) for k in ("a", "b", "poison", "c")), return_exceptions=True
        )
        assert all(isinstance(r, StoreUnavailable) for r in results)
        assert "FOREIGN KEY" in str(results[0])  # it was the COMMIT that failed
        assert store.stats.failed_batches == 1 and store.stats.rows == 0
        assert await store.list_events(EventFilter(), limit=10) == []
        assert (await store.ingest(event("a"))).first  # the store recovered
    finally:
        await store.close()


def _block_until_stored(path: Path, events: int) -> None:
    """Wait for ``events`` rows without returning to the event loop: only the
    writer thread can make progress meanwhile."""
    deadline = time.monotonic() + 10
    with _raw(path) as raw:
        while raw.execute("SELECT count(*) FROM events").fetchone()[0] < events:
            assert time.monotonic() < deadline, "the writer waited for the event loop"
            time.sleep(0.01)


async def test_sqlite_writer_takes_the_next_batch_without_the_event_loop(tmp_path: Path) -> None:
    """A busy loop answers the writer thread late; the thread must not wait for it
    before it commits the next batch (the ingest latency that capped Q1)."""
    path = tmp_path / "relay.db"
    store = SQLiteStore(path, max_batch=8)
    await store.open()
    try:
        hold = threading.Event()
        held = asyncio.ensure_future(store._db.call(lambda _c: hold.wait(10)))
        ingests = [asyncio.ensure_future(store.ingest(event(f"k{i}"))) for i in range(24)]
        assert store._batcher is not None
        while not store._batcher.busy:
            await asyncio.sleep(0)
        hold.set()
        _block_until_stored(path, 24)  # the event loop stands still meanwhile
        await held
        assert all(got.first for got in await asyncio.gather(*ingests))
        assert store.stats.batches == 3 and store.stats.rows == 24
    finally:
        await store.close()


async def test_sqlite_locked_database_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path, busy_timeout=0)
    await store.open()
    raw = _raw(path)
    try:
        raw.execute("BEGIN IMMEDIATE")
        with pytest.raises(StoreUnavailable):
            await store.ingest(event("k1"))
        with pytest.raises(StoreUnavailable):
            await store.claim_sync(event("s1", upstreams=()), lease_ttl=30)
        raw.execute("ROLLBACK")
        assert (await store.ingest(event("k1"))).first
    finally:
        raw.close()
        await store.close()


async def test_sqlite_pragmas_and_idempotent_migrations(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    for _ in range(2):
        store = SQLiteStore(path)
        await store.open()
        await store.ingest(event(f"k{_}"))
        await store.close()
    with _raw(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        shipped = [(m.version,) for m in load_migrations("relay.store.sqlite", "migrations")]
        assert raw.execute("SELECT version FROM schema_migrations").fetchall() == shipped
        assert raw.execute("SELECT count(*) FROM events").fetchone()[0] == 2


async def test_sqlite_schema_too_new_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    await store.close()
    with _raw(path) as raw:
        raw.execute("INSERT INTO schema_migrations VALUES (9999, 'future', 0)")
    with pytest.raises(SchemaTooNew):
        await store.open()
    assert not await store.ping()


async def test_sqlite_from_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert isinstance(open_store_for_url(f"sqlite:///{tmp_path}/x.db"), SQLiteStore)
    absolute = SQLiteStore.from_url(f"sqlite:///{tmp_path}/a/b/relay.db")
    assert absolute.path == tmp_path / "a" / "b" / "relay.db"
    monkeypatch.chdir(tmp_path)
    relative = SQLiteStore.from_url("sqlite:///data/relay.db", max_batch=10)
    assert relative.path == Path("data/relay.db") and relative.max_batch == 10
    for store, made in ((absolute, tmp_path / "a" / "b"), (relative, tmp_path / "data")):
        await store.open()  # its directory is made when it opens, private
        await store.close()
        assert made.is_dir() and stat.S_IMODE(made.stat().st_mode) == 0o700
    for bad in ("sqlite://relay.db", "sqlite:///", "postgresql:///x", "sqlite:///d/"):
        with pytest.raises(ValueError):
            SQLiteStore.from_url(bad)


async def test_sqlite_one_process_per_file_and_recovery_of_orphaned_leases(
    tmp_path: Path,
) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path)
    await store.open()
    second = SQLiteStore(path)
    with pytest.raises(StoreUnavailable, match="in use by another webhook-relay process"):
        await second.open()
    first = await store.ingest(event("q1"))
    (lease,) = await store.lease_due("orders", UP_A, 10, lease_ttl=3600)
    claim = await store.claim_sync(event("s1", upstreams=()), lease_ttl=3600)
    assert isinstance(claim, Acquired)
    # The holder "dies": nothing is finished; the lock goes with the process.
    await store.close()
    reopened = SQLiteStore(path)
    await reopened.open()
    try:
        # Leases far from expiry, yet orphaned: recovery frees them at once.
        assert await reopened.recover() == 2
        info = await reopened.get_event(first.event_id)
        assert info is not None
        (delivery,) = info.deliveries
        assert (delivery.state, delivery.attempts) == ("pending", 1)  # the lost attempt counts
        assert await reopened.peek_sync("orders", "s1") is None
        assert isinstance(await reopened.claim_sync(event("s1", upstreams=()), 30), Acquired)
        assert not await reopened.finish_attempt(
            lease, Attempt(0.0, 1.0, 200, None), Outcome("delivered")
        )  # the dead holder's late answer is fenced off
    finally:
        await reopened.close()


async def test_a_store_from_before_filters_is_rebuilt_with_every_row_kept(tmp_path: Path) -> None:
    """0006 rebuilds deliveries and attempts (SQLite cannot change a CHECK in place):
    rows, ids and the cascade from events through deliveries to attempts survive."""
    path = tmp_path / "relay.db"
    older = [m for m in load_migrations("relay.store.sqlite", "migrations") if m.version <= 5]
    with _raw(path) as raw:
        raw.execute("PRAGMA foreign_keys = ON")
        migrate_sqlite(raw, older, now=1.0)
        raw.execute(
            "INSERT INTO events (id, route, key, key_source, fingerprint, method, path, query,"
            " headers, body, received_at, last_seen_at) VALUES (7, 'orders', 'k', 'sha256',"
            " 'fp', 'POST', '/', '', '[]', x'00', 1, 1)"
        )
        raw.execute(
            "INSERT INTO deliveries (id, event_id, route, upstream, state, attempts, reason,"
            " created_at, updated_at) VALUES (41, 7, 'orders', 'http://a/', 'dead', 3, 'gone', 1, 1)"
        )
        raw.execute(
            "INSERT INTO attempts (id, delivery_id, started_at, duration_ms, status, error,"
            " answer) VALUES (90, 41, 1, 2.5, 500, NULL, x'6f6b')"
        )
    store = SQLiteStore(path)
    await store.open()
    info = await store.get_event(7)
    assert info is not None
    assert [(d.id, d.state, d.attempts, d.reason) for d in info.deliveries] == [
        (41, "dead", 3, "gone")
    ]
    assert [(a.delivery_id, a.status, a.answer) for a in info.attempts] == [(41, 500, b"ok")]
    got = await store.ingest(event("new", upstreams=(UP_A,), filtered="ping"))
    new = await store.get_event(got.event_id)
    assert new is not None and [(d.state, d.reason) for d in new.deliveries] == [
        ("filtered", "ping")
    ]
    assert new.deliveries[0].id > 41  # AUTOINCREMENT carried on
    await store.close()
    with _raw(path) as raw:
        raw.execute("PRAGMA foreign_keys = ON")
        assert raw.execute("PRAGMA foreign_key_check").fetchall() == []
        raw.execute("DELETE FROM events WHERE id = 7")
        assert raw.execute("SELECT count(*) FROM attempts").fetchone()[0] == 0
        tables = {r[0] for r in raw.execute("SELECT name FROM sqlite_master")}
        assert not {t for t in tables if t.endswith("_v5")}
