"""What the console reads from the store, against every backend: the first
duplicate's time, the kept start of each answer (and its retention), the
per-upstream counts and the newest attempts."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from relay.store.base import Attempt, EventFilter, Outcome, Store, UpstreamCounts
from tests.integration.test_store import UP_A, UP_B, attempt, deliver, event, kill, lease_one

if TYPE_CHECKING:
    from tests.conftest import FakeClock


async def test_first_and_last_duplicate_times(store: Store, clock: FakeClock) -> None:
    first = await store.ingest(event("k1"))
    info = await store.get_event(first.event_id)
    assert info is not None and info.first_duplicate_at is None
    clock.advance(10)
    t1 = clock.now
    await store.ingest(event("k1"))
    clock.advance(5)
    await store.ingest(event("k1", fingerprint="fp-2"))
    info = await store.get_event(first.event_id)
    assert info is not None
    assert (info.duplicates, info.mismatches) == (2, 1)
    assert info.first_duplicate_at == t1
    assert info.last_seen_at == clock.now


async def test_sync_duplicates_record_the_first_duplicate_too(
    store: Store, clock: FakeClock
) -> None:
    claim = await store.claim_sync(event("s1", upstreams=()), lease_ttl=30)
    clock.advance(3)
    await store.claim_sync(event("s1", upstreams=()), lease_ttl=30)
    info = await store.get_event(claim.event_id)
    assert info is not None and info.first_duplicate_at == clock.now


async def test_attempts_keep_the_start_of_the_answer_until_payloads_go(
    store: Store, clock: FakeClock
) -> None:
    ingested = await store.ingest(event("k1"))
    lease = await lease_one(store)
    said = Attempt(clock.now, 3.0, 503, None, b"<h1>busy</h1>")
    assert await store.finish_attempt(lease, said, Outcome("pending", next_attempt_at=clock.now))
    lease = await lease_one(store)
    assert await store.finish_attempt(lease, attempt(), Outcome("delivered"))
    info = await store.get_event(ingested.event_id)
    assert info is not None
    busy, ok = info.attempts
    assert (busy.status, busy.answer, ok.answer) == (503, b"<h1>busy</h1>", None)
    assert 0 < busy.id < ok.id
    clock.advance(100)
    assert await store.drop_payloads(clock.now, 10) == 1
    info = await store.get_event(ingested.event_id)
    assert info is not None and info.body is None
    assert [a.answer for a in info.attempts] == [None, None]
    assert [a.status for a in info.attempts] == [503, 200]  # the log itself stays


async def test_upstream_counts_need_a_look_per_upstream(store: Store) -> None:
    assert await store.upstream_counts() == []
    await store.ingest(event("k1", upstreams=(UP_A, UP_B)))
    await kill(store)  # k1 to A
    await store.ingest(event("k2", upstreams=(UP_A, UP_B)))
    await deliver(store)  # k2 to A: delivered deliveries are not counted
    await store.ingest(event("k3", upstreams=(UP_A,)))
    stale = await lease_one(store)  # k3 to A
    assert await store.finish_attempt(stale, None, Outcome("stale", reason="older"))
    assert len(await store.lease_due("orders", UP_B, 1, lease_ttl=30)) == 1  # k1 to B
    assert await store.upstream_counts() == [
        UpstreamCounts("orders", UP_A, dead=1, stale=1),
        UpstreamCounts("orders", UP_B, pending=1, in_flight=1),
    ]


async def test_recent_attempts_newest_first_after_an_id(store: Store, clock: FakeClock) -> None:
    assert await store.recent_attempts(0, 10) == []
    a = await store.ingest(event("k1"))
    b = await store.ingest(event("k2", route="github"))
    await kill(store)
    clock.advance(1)
    await deliver(store, route="github")
    newest, oldest = await store.recent_attempts(0, 10)
    assert (newest.event_id, newest.route, newest.status) == (b.event_id, "github", 200)
    assert (oldest.event_id, oldest.route, oldest.status) == (a.event_id, "orders", 400)
    assert oldest.upstream == UP_A and newest.id > oldest.id
    assert await store.recent_attempts(oldest.id, 10) == [newest]
    assert await store.recent_attempts(0, 1) == [newest]
    assert await store.recent_attempts(newest.id, 10) == []


async def test_filters_answer_the_same_whichever_index_drives_them(
    store: Store, clock: FakeClock
) -> None:
    ids = {}
    for i, (route, key) in enumerate(
        [("orders", "k1"), ("github", "k1"), ("orders", "k2"), ("github", "k2"), ("orders", "k3")]
    ):
        made = event(key, route=route, received_at=clock.now)
        ids[route, key] = (await store.ingest(made)).event_id
        if key == "k1":
            await kill(store, route=route)
        clock.advance(10 * (i + 1))

    async def found(**kw: Any) -> list[int]:
        return [e.id for e in await store.list_events(EventFilter(**kw), 10)]

    assert await found(key="k1") == [ids["github", "k1"], ids["orders", "k1"]]
    assert await found(state="dead") == [ids["github", "k1"], ids["orders", "k1"]]
    assert await found(state="dead", route="orders") == [ids["orders", "k1"]]
    assert await found(state="pending", route="github") == [ids["github", "k2"]]
    t_k2 = (await store.get_event(ids["orders", "k2"])).received_at  # type: ignore[union-attr]
    assert await found(since=t_k2) == [
        ids["orders", "k3"],
        ids["github", "k2"],
        ids["orders", "k2"],
    ]
    assert await found(until=t_k2) == [ids["github", "k1"], ids["orders", "k1"]]
    assert await found(since=t_k2, until=t_k2 + 1) == [ids["orders", "k2"]]
    assert await found(since=clock.now + 1) == [] and await found(until=0) == []
    assert (await store.preview_requeue(EventFilter(state="dead", route="github"))).count == 1
    assert (await store.preview_purge(EventFilter(key="k1"))).count == 2  # dead: nothing open


TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


async def test_the_ingest_span_is_kept_for_attempts_and_duplicates(store: Store) -> None:
    first = await store.ingest(event("k1", trace=TRACE))
    assert first.first and first.stored_trace == TRACE
    again = await store.ingest(event("k1", trace="00-" + "1" * 32 + "-" + "2" * 16 + "-01"))
    assert not again.first and again.stored_trace == TRACE  # the first copy's, for the link
    untraced = await store.ingest(event("k2"))
    assert untraced.stored_trace is None
    leases = {lease.key: lease.trace for lease in await store.lease_due("orders", UP_A, 10, 30)}
    assert leases == {"k1": TRACE, "k2": None}


async def test_sync_duplicates_see_the_first_copys_trace(store: Store) -> None:
    claim = await store.claim_sync(event("s1", upstreams=(), trace=TRACE), lease_ttl=30)
    busy = await store.claim_sync(event("s1", upstreams=()), lease_ttl=30)
    assert busy.event_id == claim.event_id and getattr(busy, "trace", None) == TRACE
