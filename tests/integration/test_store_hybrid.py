"""The store's part in hybrid mode, against every backend: one event's delivery
leased in line, and the answer kept for its duplicates."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.store.base import Outcome, Store, StoredResponse
from tests.integration.test_store import UP_A, UP_B, attempt, event

if TYPE_CHECKING:
    from tests.conftest import FakeClock


async def test_lease_delivery_takes_exactly_that_event(store: Store) -> None:
    first = await store.ingest(event("k1", upstreams=(UP_A, UP_B)))
    second = await store.ingest(event("k2"))
    lease = await store.lease_delivery("orders", UP_A, second.event_id, 30)
    assert lease is not None and lease.event_id == second.event_id and lease.upstream == UP_A
    assert lease.body == event("k2").body and lease.attempts == 0
    assert await store.lease_delivery("orders", UP_A, second.event_id, 30) is None  # in flight
    assert await store.lease_delivery("orders", UP_A, 10_000, 30) is None  # no such event
    (other,) = await store.lease_due("orders", UP_A, 10, 30)
    assert other.event_id == first.event_id  # the rest is the queue's as ever
    assert await store.finish_attempt(lease, attempt(), Outcome("delivered"))


async def test_lease_delivery_keeps_to_ordering_pauses_and_due_times(
    store: Store, clock: FakeClock
) -> None:
    await store.ingest(event("k1", ordering_key="cus_1"))
    later = await store.ingest(event("k2", ordering_key="cus_1"))
    assert await store.lease_delivery("orders", UP_A, later.event_id, 30) is None  # k1 first
    free = await store.ingest(event("k3"))
    assert await store.pause("orders", "", None)
    assert await store.lease_delivery("orders", UP_A, free.event_id, 30) is None
    await store.resume("orders", "")
    lease = await store.lease_delivery("orders", UP_A, free.event_id, 30)
    assert lease is not None
    backoff = Outcome("pending", next_attempt_at=clock.now + 60)
    assert await store.finish_attempt(lease, attempt(503), backoff)
    assert await store.lease_delivery("orders", UP_A, free.event_id, 30) is None  # not due


async def test_an_answer_is_kept_for_the_duplicates(store: Store) -> None:
    got = await store.ingest(event("k1"))
    assert await store.stored_answer(got.event_id) is None
    answer = StoredResponse(201, "application/json", b'{"id": 7}')
    await store.store_answer(got.event_id, answer)
    assert await store.stored_answer(got.event_id) == answer
    info = await store.get_event(got.event_id)
    assert info is not None and info.sync_state is None  # still a queued event
