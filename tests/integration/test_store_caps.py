"""Storage caps on every backend that owns its database: the oldest finished data
goes first (bodies and attempts before keys), open work never, keys inside their
dedupe window only under ``cap_policy: drop_keys``; with only those left under
``keep_keys`` new events are refused (503 ``store_full``) until there is room."""

from __future__ import annotations

from typing import Any

import pytest

from relay.config import from_mapping
from relay.errors import StoreFull
from relay.housekeeping import enforce_caps
from relay.metrics import Metrics
from relay.runtime import Relay
from relay.store.base import Attempt, Outcome, Store
from tests.conftest import FakeClock, StoreMaker
from tests.integration.test_store import UP_A, event

DAY = 86400.0


def relay_for(store: Store, **storage: Any) -> Relay:
    doc = {
        "storage": {"dedupe_window": "1d", **storage},
        "routes": [{"name": "orders", "path": "/orders", "upstream": UP_A}],
    }
    return Relay(config=from_mapping(doc, env={}), store=store, metrics=Metrics())


async def fill(store: Store, clock: FakeClock, prefix: str, n: int, finish: str | None) -> None:
    for i in range(n):
        await store.ingest(event(f"{prefix}{i}"))
    if finish is None:
        return
    leases = await store.lease_due("orders", UP_A, n, lease_ttl=60)
    for lease in leases:
        tried = Attempt(clock.now, 1.0, 200 if finish == "delivered" else 410, None, b"answer")
        outcome = Outcome("delivered") if finish == "delivered" else Outcome("dead")
        assert await store.finish_attempt(lease, tried, outcome)


async def keys(store: Store) -> list[str]:
    from relay.store.base import EventFilter

    return sorted(e.key for e in await store.list_events(EventFilter(), 1000))


async def test_a_row_cap_takes_old_finished_events_and_never_open_work(
    make_local_store: StoreMaker, clock: FakeClock
) -> None:
    store = make_local_store()
    await store.open()
    try:
        await fill(store, clock, "old", 4, "delivered")
        await fill(store, clock, "dead", 2, "dead")
        clock.advance(2 * DAY)  # past the window
        await fill(store, clock, "new", 3, "delivered")
        await fill(store, clock, "open", 3, None)
        relay = relay_for(store, max_rows=6)
        await enforce_caps(relay, store)
        # 12 events, cap 6: the six past the window go (oldest first), dead ones too.
        assert await keys(store) == ["new0", "new1", "new2", "open0", "open1", "open2"]
        assert store.full is None
        assert relay.metrics.capped.labels("events")._value.get() == 6

        # Under keep_keys nothing in the window goes: the store refuses new events.
        tight = relay_for(store, max_rows=4)
        await enforce_caps(tight, store)
        assert len(await keys(store)) == 6 and store.full is not None
        with pytest.raises(StoreFull):
            await store.ingest(event("refused"))
        # drop_keys: the oldest finished keys go, open work stays.
        dropping = relay_for(store, max_rows=4, cap_policy="drop_keys")
        await enforce_caps(dropping, store)
        assert await keys(store) == ["new2", "open0", "open1", "open2"]
        assert store.full is None
        await store.ingest(event("taken"))
        # Nothing finished is left: open work is never capped, whatever the policy.
        await enforce_caps(relay_for(store, max_rows=1, cap_policy="drop_keys"), store)
        assert await keys(store) == ["open0", "open1", "open2", "taken"]
        assert store.full is not None
    finally:
        await store.close()


async def test_a_byte_cap_takes_bodies_and_attempts_before_any_key(
    make_local_store: StoreMaker, clock: FakeClock
) -> None:
    store = make_local_store()
    await store.open()
    try:
        await fill(store, clock, "k", 20, "delivered")
        await fill(store, clock, "open", 2, None)
        used = await store.usage()
        # A little over: bodies of the oldest finished events go, every key stays.
        relay = relay_for(store, max_bytes=used - 300)
        await enforce_caps(relay, store)
        assert len(await keys(store)) == 22
        dropped = relay.metrics.capped.labels("bodies")._value.get()
        assert 1 <= dropped < 20
        first, last = await store.get_event(1), await store.get_event(20)
        assert first is not None and first.body is None and first.attempts == ()
        assert first.deliveries[0].state == "delivered"  # its history's summary stays
        assert last is not None and last.body is not None and len(last.attempts) == 1
        pending = await store.lease_due("orders", UP_A, 10, lease_ttl=60)
        assert all(lease.body for lease in pending)  # open work keeps its body
    finally:
        await store.close()
