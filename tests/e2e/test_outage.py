"""A backend that refuses connections for a while, then comes up."""

from __future__ import annotations

from typing import Any

import aiohttp

from .support import (
    Backend,
    connect_refused,
    deliveries_by_state,
    free_port,
    post_many,
    queue_route,
    wait_for,
)

N = 200


async def test_backend_down_then_up_delivers_each_event_once(
    relays: Any, start_backend: Any
) -> None:
    backend = Backend()
    backend.port = free_port()  # reserved, nothing listens on it yet
    relay = relays(
        [
            queue_route(
                backend,
                concurrency=16,
                retry={"initial": "50ms", "max": "200ms", "max_attempts": 10000},
                timeout={"connect": "1s", "total": "5s"},
                # The retry path alone: with the breaker (on by default) the refused
                # attempts are probes only; test_breaker_e2e covers that.
                breaker=False,
            )
        ]
    )
    await relay.start()
    keys = [f"outage-{i:03d}" for i in range(N)]
    async with aiohttp.ClientSession() as session:
        acks = await post_many(session, relay.url("/q"), keys)
    assert sorted(k for k, st in acks.items() if st == 202) == keys, acks
    assert connect_refused(backend.port)

    # Every event has been tried and refused at least once, and retries go on.
    def retries() -> int:
        return len(relay.logged("delivery_retry"))

    await wait_for(lambda: retries() >= 2 * N, 10, f"{2 * N} refused attempts")
    assert not relay.logged("delivery_dead")
    assert deliveries_by_state(relay.db).get("delivered", 0) == 0

    await start_backend(backend, port=backend.port)
    await wait_for(lambda: backend.distinct == N, 10, f"all {N} events delivered")
    await wait_for(
        lambda: deliveries_by_state(relay.db) == {"delivered": N},
        5,
        "every delivery recorded as delivered",
    )
    assert sorted(backend.received) == keys
    assert backend.repeated() == {}, "an event reached the backend twice"
    # Info lines are flushed in bursts (every 50 ms): wait for them, bounded.
    await wait_for(lambda: len(relay.logged("delivery_succeeded")) == N, 5, "a log line each")
    assert await relay.stop() == 0
    assert backend.repeated() == {}
