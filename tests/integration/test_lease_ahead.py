"""A delivery loop leases ahead of its free slots: what it holds, what it sends, and
what it gives back unsent (a pause, shutdown)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from relay.serve import OWN_STORE
from relay.store.base import EventFilter, Store
from tests.integration.conftest import (
    Backend,
    Client,
    RelayFactory,
    dispatcher_of,
    eventually,
)
from tests.integration.test_queue_mode import post, queue_route


async def _in_flight_is(store: Store, n: int) -> bool:
    return sum(c.in_flight for c in await store.upstream_counts()) == n


async def _two_sent_two_ahead(
    upstream: Backend, make_relay: RelayFactory, keys: list[str]
) -> tuple[Client, Store, asyncio.Event]:
    """A relay with ``concurrency: 2`` whose backend holds every answer until the
    returned event is set, once ``keys`` are stored and it has two attempts out and
    two deliveries leased ahead."""
    release = asyncio.Event()

    async def held(_request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"n": n})

    upstream.behaviour = held
    client = await make_relay(queue_route(upstream, concurrency=2))
    store = client.app[OWN_STORE]
    for key in keys:
        assert (await post(client, key)).status == 202
    await upstream.wait_for(2)
    await eventually(lambda: _in_flight_is(store, 4), "two slots in flight, two leased ahead")
    return client, store, release


async def test_leases_ahead_send_no_more_than_concurrency_and_pause_gives_them_back(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    keys = [f"k-{i}" for i in range(10)]
    client, store, release = await _two_sent_two_ahead(upstream, make_relay, keys)
    assert len(upstream.seen) == 2  # the backend never sees more than concurrency
    # A pause holds the upstream: what was leased ahead goes back, uncharged.
    assert await store.pause("orders", upstream.url("/orders"), "deploy")
    await dispatcher_of(client).refresh_pauses()
    await eventually(lambda: _in_flight_is(store, 2), "the leases ahead given back")
    events = await store.list_events(EventFilter(), limit=20)
    attempts = sorted(d.attempts for e in events for d in e.deliveries)
    assert attempts == [0] * 10  # none charged yet: the two sent are still out
    release.set()
    await eventually(lambda: _in_flight_is(store, 0), "the two sent recorded")
    assert len(upstream.seen) == 2  # paused: nothing more went out
    await store.resume("orders", upstream.url("/orders"))
    await dispatcher_of(client).refresh_pauses()
    await upstream.wait_for(10)
    assert sorted(upstream.keys(), key=str) == keys  # once each


async def test_shutdown_gives_back_the_leases_ahead_as_due_and_uncharged(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client, store, release = await _two_sent_two_ahead(
        upstream, make_relay, [f"s-{i}" for i in range(6)]
    )
    release.set()
    await dispatcher_of(client).stop(grace=5.0)
    assert await _in_flight_is(store, 0)
    counts = await store.upstream_counts()
    delivered = len(upstream.seen)
    assert sum(c.pending for c in counts) == 6 - delivered
    events = await store.list_events(EventFilter(), limit=20)
    pending = [d for e in events for d in e.deliveries if d.state == "pending"]
    assert all(d.attempts == 0 for d in pending)  # never sent, never charged
