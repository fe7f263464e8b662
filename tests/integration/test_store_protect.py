"""The store's part in protecting a backend, against every backend: pauses held in
the store, deliveries made due at once, previews that equal the real change, and
the audit log."""

from __future__ import annotations

from typing import TYPE_CHECKING

from relay.store.base import AuditEntry, EventFilter, Outcome, Store
from tests.integration.test_store import UP_A, UP_B, attempt, event, kill, lease_one

if TYPE_CHECKING:
    from tests.conftest import FakeClock, StoreMaker


async def test_a_paused_route_leases_nothing_until_resumed(store: Store) -> None:
    await store.ingest(event("k1", upstreams=(UP_A, UP_B)))
    assert await store.pause("orders", "", "maintenance")
    assert not await store.pause("orders", "", "again")  # already paused
    (p,) = await store.pauses()
    assert (p.route, p.upstream, p.reason) == ("orders", "", "maintenance")
    assert p.covers("orders", UP_A) and p.covers("orders", UP_B) and not p.covers("other", UP_A)
    assert await store.lease_due("orders", UP_A, 10, 30) == []
    assert await store.next_due_at("orders", UP_A) is None
    assert await store.count_due("orders", UP_A) == 1  # held, not gone
    assert await store.resume("orders", "") == 1
    assert await store.pauses() == []
    assert (await lease_one(store, upstream=UP_A)).attempts == 0  # nothing was charged
    await lease_one(store, upstream=UP_B)


async def test_one_upstream_paused_leaves_the_others_going(store: Store) -> None:
    await store.ingest(event("k1", upstreams=(UP_A, UP_B)))
    assert await store.pause("orders", UP_A, None)
    assert await store.lease_due("orders", UP_A, 10, 30) == []
    await lease_one(store, upstream=UP_B)
    # Resuming the route ends every pause of it, the upstream's too.
    assert await store.pause("orders", "", None)
    assert await store.resume("orders", "") == 2
    await lease_one(store, upstream=UP_A)


async def test_a_pause_outlives_the_process(make_store: StoreMaker) -> None:
    first = make_store()
    await first.open()
    try:
        await first.ingest(event("k1"))
        await first.pause("orders", "", "deploy")
    finally:
        await first.close()
    again = make_store()
    await again.open()
    try:
        assert [p.reason for p in await again.pauses()] == ["deploy"]
        assert await again.lease_due("orders", UP_A, 10, 30) == []
    finally:
        await again.close()


async def test_make_due_brings_backed_off_deliveries_forward(
    store: Store, clock: FakeClock
) -> None:
    for key in ("k1", "k2"):
        await store.ingest(event(key))
    leases = await store.lease_due("orders", UP_A, 10, 30)
    for lease in leases:
        later = Outcome("pending", next_attempt_at=clock.now + 3600)
        assert await store.finish_attempt(lease, attempt(503), later)
    assert await store.count_due("orders", UP_A) == 0
    assert await store.make_due("orders", UP_A) == 2
    assert await store.count_due("orders", UP_A) == 2
    again = await store.lease_due("orders", UP_A, 10, 30)
    assert [d.attempts for d in again] == [1, 1]  # the failed attempt counted once, no more
    assert await store.make_due("orders", UP_A) == 0  # in flight: not pending


async def test_previews_equal_what_the_change_then_does(store: Store) -> None:
    for i in range(3):
        await store.ingest(event(f"d{i}"))
        await kill(store)
    await store.ingest(event("x", route="other"))
    await kill(store, route="other")
    await store.ingest(event("open"))  # pending: neither requeued nor purged

    every = EventFilter()
    preview = await store.preview_requeue(every)
    assert (preview.count, preview.routes) == (4, (("orders", 3), ("other", 1)))
    assert preview.events == 4
    assert (await store.preview_requeue(every)).count == 4  # the preview changed nothing
    forced = await store.preview_requeue(EventFilter(route="orders"), force=True)
    assert forced.count == 4  # every delivery not in flight, the pending one too
    purge = await store.preview_purge(every)
    assert (purge.count, purge.routes, purge.events) == (4, (("orders", 3), ("other", 1)), 4)

    assert await store.requeue(every) == preview.count
    assert (await store.preview_purge(every)).count == 0  # requeued: open work again


async def test_audit_log_pages_newest_first(store: Store, clock: FakeClock) -> None:
    ids = []
    for i in range(3):
        entry = AuditEntry(
            at=clock.now + i,
            action="purge",
            target='{"route": "orders"}',
            affected=i,
            credential="admin_token",
            reason=f"ticket {i}",
            client="webhook-relay-cli/0.1.0",
        )
        ids.append(await store.add_audit(entry))
    assert ids == sorted(ids) and len(set(ids)) == 3
    page = await store.audit_log(2)
    assert [e.reason for e in page] == ["ticket 2", "ticket 1"]
    assert page[0].id == ids[2] and page[0].credential == "admin_token"
    assert page[0].client == "webhook-relay-cli/0.1.0" and page[0].affected == 2
    rest = await store.audit_log(10, before_id=page[-1].id)
    assert [e.reason for e in rest] == ["ticket 0"]
