"""SIGTERM while senders are still posting: every 2xx is a committed event."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import aiohttp

from .support import Backend, deliveries_by_state, post, queue_route, wait_for

N = 600
SENDERS = 32


async def test_sigterm_under_ingest_load_loses_no_acked_event(
    relays: Any, start_backend: Any
) -> None:
    backend = await start_backend(Backend(delay=0.002))
    relay = relays(
        [queue_route(backend, concurrency=8, retry={"initial": "50ms", "max": "200ms"})],
        shutdown_grace="5s",
    )
    await relay.start()
    url = relay.url("/q")
    keys = [f"ingest-{i:04d}" for i in range(N)]
    acked: set[str] = set()
    refused: dict[int, int] = {}  # status (0: no answer) -> count, after SIGTERM
    stopping = asyncio.Event()
    armed = True

    async def send_all(todo: list[str]) -> None:
        todo = list(reversed(todo))

        async def worker() -> None:
            nonlocal armed
            while todo:
                key = todo.pop()
                try:
                    status, _, _ = await post(session, url, key, timeout=10)
                except (aiohttp.ClientError, TimeoutError):
                    status = 0
                if 200 <= status < 300:
                    acked.add(key)
                    if armed and len(acked) >= N // 3:
                        armed = False
                        relay.signal(signal.SIGTERM)
                        stopping.set()
                elif stopping.is_set():
                    refused[status] = refused.get(status, 0) + 1

        await asyncio.gather(*(worker() for _ in range(SENDERS)))

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=SENDERS)) as session:
        await send_all(keys)
        assert stopping.is_set(), "the senders finished before SIGTERM"
        assert await relay.wait_exit() == 0
        assert relay.logged("relay_stopped")
        acked_before_exit = set(acked)
        # After SIGTERM a sender gets either a 2xx (stored) or a refusal it will retry.
        assert set(refused) <= {0, 503}, refused
        states = deliveries_by_state(relay.db)
        assert states.get("in_flight", 0) == 0, states
        assert sum(states.values()) >= len(acked_before_exit), (states, len(acked_before_exit))

        await relay.start()
        for _ in range(5):
            missing = [k for k in keys if k not in acked]
            if not missing:
                break
            await send_all(missing)
        assert len(acked) == N
        await wait_for(lambda: backend.distinct == N, 15, f"all {N} events delivered", 0.05)
        await wait_for(
            lambda: deliveries_by_state(relay.db) == {"delivered": N},
            5,
            "every delivery recorded as delivered",
            0.1,
        )
    print(
        f"\nSIGTERM under load: acked before exit {len(acked_before_exit)},"
        f" refused after SIGTERM {refused}, delivered {backend.distinct}"
    )
    assert acked_before_exit <= set(backend.received)
    assert backend.repeated() == {}, "a clean shutdown must not cause a re-forward"
    assert await relay.stop() == 0
