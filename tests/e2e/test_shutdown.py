"""SIGTERM: stop accepting, drain what is in flight, exit 0; nothing acked is lost."""

from __future__ import annotations

import asyncio
import json
import signal
from typing import Any

import aiohttp

from .support import (
    AttemptCutOff,
    Backend,
    ExitTooSlow,
    connect_refused,
    deliveries_by_state,
    post,
    post_many,
    queue_route,
    sync_route,
    wait_for,
)

GRACE = 5.0


async def test_sigterm_drains_in_flight_sync_request(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend(delay=1.5))
    relay = relays([sync_route(backend, timeout={"total": "10s"})], shutdown_grace=f"{GRACE}s")
    await relay.start()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        in_flight = asyncio.create_task(post(session, relay.url("/s"), "drain-1"))
        await wait_for(lambda: backend.received["drain-1"] == 1, 5, "the backend to get drain-1")

        sent_at = loop.time()
        relay.signal(signal.SIGTERM)
        # The listener goes first: new connections are refused while the
        # request in flight is still waiting on the backend.
        await wait_for(lambda: connect_refused(relay.port), 1.0, "the listener to close")
        assert not in_flight.done(), "the in-flight request ended before the backend answered"
        # Probes see "draining" until the end (the admin listener closes last).
        async with session.get(relay.admin_url("/readyz")) as resp:
            assert resp.status == 503, await resp.text()
            assert (await resp.json())["status"] == "draining"

        status, headers, body = await asyncio.wait_for(in_flight, GRACE)
        assert status == 200, body
        assert json.loads(body)["key"] == "drain-1"
        assert "Idempotent-Replayed" not in headers

        rc = await relay.wait_exit(GRACE + 1)
        took = loop.time() - sent_at
    assert rc == 0
    assert took < GRACE, f"exit took {took:.2f}s, grace is {GRACE}s"
    assert backend.received["drain-1"] == 1
    assert relay.logged("relay_stopping")
    assert relay.logged("relay_stopped")


async def test_sigterm_queue_finishes_in_flight_and_keeps_the_rest(
    relays: Any, start_backend: Any
) -> None:
    """Attempts in flight finish within the grace; the rest stay pending for the next start."""
    n = 40
    backend = await start_backend(Backend(delay=0.2))
    relay = relays(
        [queue_route(backend, concurrency=4, retry={"initial": "50ms", "max": "200ms"})],
        shutdown_grace=f"{GRACE}s",
    )
    await relay.start()
    keys = [f"term-{i:03d}" for i in range(n)]
    async with aiohttp.ClientSession() as session:
        acks = await post_many(session, relay.url("/q"), keys)
    assert sorted(k for k, st in acks.items() if st == 202) == keys, acks
    await wait_for(lambda: backend.distinct >= 4, 5, "deliveries to start")

    rc = await relay.stop(GRACE + 1)
    assert rc == 0
    assert relay.logged("relay_stopped")
    before_exit = dict(backend.received)
    # Whatever was sent upstream before the exit was answered, not cut off.
    assert dict(backend.answered) == before_exit
    assert 4 <= len(before_exit) < n, f"{len(before_exit)} delivered before exit"

    await relay.start()
    await wait_for(lambda: backend.distinct == n, 15, f"all {n} events after the restart")
    assert sorted(backend.received) == keys
    assert backend.repeated() == {}, "an attempt finished within the grace was re-forwarded"
    assert await relay.stop() == 0


async def test_sigterm_queue_cancels_attempts_past_the_grace(
    relays: Any, start_backend: Any
) -> None:
    """An attempt still waiting on the backend at the end of the grace is cancelled and
    goes back to pending: the exit stays bounded and the event is delivered after a restart."""
    grace = 1.0
    backend = Backend()
    backend.hold = asyncio.Event()
    backend.hold_first = 3  # the first three requests hang until released
    await start_backend(backend)
    relay = relays(
        [queue_route(backend, concurrency=3, retry={"initial": "50ms", "max": "200ms"})],
        shutdown_grace=f"{grace}s",
    )
    await relay.start()
    keys = [f"hang-{i}" for i in range(10)]
    async with aiohttp.ClientSession() as session:
        acks = await post_many(session, relay.url("/q"), keys, concurrency=4)
    assert all(st == 202 for st in acks.values()), acks
    await wait_for(lambda: backend.requests >= 3, 5, "three attempts to hang")
    hung = set(backend.received)

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    rc = await relay.stop(grace * 3 + 5)
    took = loop.time() - t0
    assert rc == 0
    assert took < grace + 1.0, f"exit took {took:.2f}s with a {grace}s grace"
    assert relay.logged("relay_stopped")
    assert backend.answered.total() == 0

    backend.hold.set()  # the backend is healthy again
    await relay.start()
    await wait_for(lambda: backend.distinct == len(keys), 15, "every event after the restart")
    # A cut-off attempt is re-forwarded once (the backend may or may not have
    # acted on it); nothing else is sent twice.
    await wait_for(lambda: all(backend.answered[k] >= 1 for k in keys), 5, "every event answered")
    assert set(backend.repeated()) <= hung
    assert all(n <= 2 for n in backend.received.values()), backend.received
    assert await relay.stop() == 0


FAN_OUT = 8


async def test_sigterm_under_delivery_load_finishes_every_attempt_it_started(
    relays: Any, start_backend: Any
) -> None:
    """Several upstream workers busy leasing when SIGTERM arrives: every request sent
    upstream before the exit is finished and recorded; none is sent again later."""
    n = 60
    backend = await start_backend(Backend(delay=0.02))
    route = {
        "name": "fan",
        "path": "/fan",
        "upstreams": [backend.url(f"/fan/{i}") for i in range(FAN_OUT)],
        "concurrency": 16,
    }
    relay = relays([route], shutdown_grace=f"{GRACE}s")
    await relay.start()
    keys = [f"fan-{i:03d}" for i in range(n)]
    async with aiohttp.ClientSession() as session:
        acks = await post_many(session, relay.url("/fan"), keys)
    assert sorted(k for k, st in acks.items() if st == 202) == keys, acks
    await wait_for(lambda: backend.requests >= 2 * n, 10, f"{2 * n} deliveries")

    assert await relay.stop(GRACE + 5) == 0
    sent = backend.requests
    states = deliveries_by_state(relay.db)
    assert sum(states.values()) == n * FAN_OUT
    assert sent < n * FAN_OUT, "everything was delivered before the exit: nothing to check"

    await relay.start()
    await wait_for(
        lambda: len(backend.received_by) == n * FAN_OUT, 15, "every delivery after the restart"
    )
    repeats = {k: c for k, c in backend.received_by.items() if c > 1}
    assert await relay.stop() == 0
    if states.get("in_flight", 0) or states.get("delivered", 0) != sent or repeats:
        raise AttemptCutOff(
            f"the backend got {sent} requests before the exit, the store recorded {states};"
            f" forwarded again after the restart: {len(repeats)} {sorted(repeats)[:5]}"
        )


async def test_sigterm_past_the_grace_cuts_off_attempts_and_exits_in_time(
    relays: Any, start_backend: Any
) -> None:
    """One sync request and one queue delivery hang on the backend past the grace: the exit
    is bounded by the grace, the sync key is freed (the sender's retry is forwarded at
    once), and the queue event goes back to pending (delivered after a restart)."""
    grace = 1.0
    backend = Backend()
    backend.hold = asyncio.Event()
    backend.hold_first = 2
    await start_backend(backend)
    relay = relays(
        [
            sync_route(backend, timeout={"total": "20s"}, sync={"wait": "200ms"}),
            queue_route(backend, timeout={"total": "20s"}),
        ],
        shutdown_grace=f"{grace}s",
    )
    await relay.start()
    loop = asyncio.get_running_loop()
    async with aiohttp.ClientSession() as session:
        status, _, _ = await post(session, relay.url("/q"), "cut-q")
        assert status == 202
        await wait_for(lambda: backend.received["cut-q"] == 1, 5, "the backend to get cut-q")
        in_flight = asyncio.create_task(post(session, relay.url("/s"), "cut-s", timeout=60))
        await wait_for(lambda: backend.received["cut-s"] == 1, 5, "the backend to get cut-s")
        t0 = loop.time()
        relay.signal(signal.SIGTERM)
        rc = await relay.wait_exit(grace * 4 + 5)
        took = loop.time() - t0
        try:
            outcome: Any = await asyncio.wait_for(in_flight, 5)
        except (aiohttp.ClientError, TimeoutError) as exc:
            outcome = exc
        print(f"exit after {took:.2f}s; the sync sender got {outcome!r}")
        assert rc == 0
        assert relay.logged("relay_stopped")

        backend.hold.set()
        await relay.start()
        # The sync claim was released, not left to its lease: forwarded at once.
        status, headers, body = await post(session, relay.url("/s"), "cut-s")
        assert status == 200, (status, body)
        assert "Idempotent-Replayed" not in headers
        # The cut-off queue attempt went back to pending.
        await wait_for(lambda: backend.received["cut-q"] == 2, 10, "cut-q delivered again")
    assert backend.received == {"cut-q": 2, "cut-s": 2}
    assert await relay.stop() == 0
    # Checked last, so a slow exit does not hide the outcome of the rest.
    if took >= grace + 1.0:
        raise ExitTooSlow(f"exit took {took:.2f}s with a {grace}s grace")
