"""SIGKILL: no clean-up runs; the store alone must carry the contract."""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import (
    Backend,
    NotSettled,
    deliveries_by_state,
    post,
    queue_route,
    sync_route,
    wait_for,
)

LEASE = 4.0


async def test_sync_lease_of_killed_process_is_taken_over(relays: Any, start_backend: Any) -> None:
    backend = Backend()
    backend.hold = asyncio.Event()
    backend.hold_first = 1  # the first request hangs (the relay is killed meanwhile)
    await start_backend(backend)
    relay = relays(
        [
            sync_route(
                backend,
                timeout={"total": "1s"},
                sync={"lease": f"{LEASE}s", "wait": "200ms", "busy_retry_after": "1s"},
            )
        ]
    )
    await relay.start()
    async with aiohttp.ClientSession() as session:
        claimed_at = time.time()
        first = asyncio.create_task(post(session, relay.url("/s"), "lease-1"))
        await wait_for(lambda: backend.received["lease-1"] == 1, 5, "the backend to get lease-1")
        await relay.kill()
        with pytest.raises((aiohttp.ClientError, TimeoutError)):
            await first

        # Same database: the dead process's claim is still in it, but this process
        # holds the file's lock, so the claim can only be orphaned: start-up frees it
        # and the sender's retry is forwarded at once instead of waiting out the lease.
        await relay.start()
        assert relay.logged("leases_recovered")
        status, headers, body = await post(session, relay.url("/s"), "lease-1")
        assert status == 200, body
        assert "Idempotent-Replayed" not in headers
        assert json.loads(body)["nth"] == 2
        assert time.time() < claimed_at + LEASE, "waited for the lease instead of recovering it"

        # Now final: a further duplicate is replayed, not forwarded.
        status, headers, again = await post(session, relay.url("/s"), "lease-1")
        assert status == 200
        assert headers.get("Idempotent-Replayed") == "true"
        assert json.loads(again) == json.loads(body)
    assert backend.received["lease-1"] == 2
    assert backend.answered["lease-1"] == 1
    backend.hold.set()
    assert await relay.stop() == 0


N = 2000
SENDERS = 32
CONCURRENCY = 16
SETTLE = float(os.environ.get("E2E_KILL9_SETTLE", "8"))


@pytest.mark.parametrize("workers", [0, 2], ids=["one_process", "workers"])
# One scenario read top to bottom: its senders are closures over the acked sets, and
# splitting them out would pass that state around instead.
async def test_kill_9_under_load_loses_nothing_acked(  # noqa: C901
    relays: Any, start_backend: Any, tmp_path: Path, workers: int
) -> None:
    """With workers the owner is killed: it holds the store, and its workers go down
    with it (they lose their store connection)."""
    backend = await start_backend(Backend())
    relay = relays(
        [
            queue_route(
                backend,
                concurrency=CONCURRENCY,
                timeout={"total": "5s"},
                retry={"initial": "50ms", "max": "500ms", "max_attempts": 1000},
            )
        ],
        workers=workers,
    )
    await relay.start()
    url = relay.url("/q")
    keys = [f"load-{i:05d}" for i in range(N)]
    acked: set[str] = set()  # keys the sender got a 2xx for: never sent again
    replayed: set[str] = set()  # retried keys the relay already had (ack lost in the kill)
    killed = asyncio.Event()
    armed = True  # kill once, the first time N/3 events are acked
    loop = asyncio.get_running_loop()

    async def send_all(todo: list[str]) -> None:
        todo = list(reversed(todo))

        async def worker() -> None:
            nonlocal armed
            while todo and not killed.is_set():
                key = todo.pop()
                try:
                    status, headers, _ = await post(session, url, key, timeout=10)
                except (aiohttp.ClientError, TimeoutError):
                    continue  # no answer: not acked, retried later
                if not 200 <= status < 300:
                    continue
                acked.add(key)
                if headers.get("Idempotent-Replayed") == "true":
                    replayed.add(key)
                if armed and len(acked) >= N // 3:
                    # Mid-stream, synchronously: no other sender runs meanwhile.
                    armed = False
                    assert relay.proc is not None
                    relay.proc.kill()
                    killed.set()

        await asyncio.gather(*(worker() for _ in range(SENDERS)))

    async def retry_until_acked(rounds: int = 10) -> None:
        for _ in range(rounds):
            missing = [k for k in keys if k not in acked]
            if not missing:
                return
            await send_all(missing)
        raise AssertionError(f"{N - len(acked)} events never acked")

    t0 = loop.time()
    connector = aiohttp.TCPConnector(limit=SENDERS)
    async with aiohttp.ClientSession(connector=connector) as session:
        await send_all(keys)
        assert killed.is_set(), "the sender finished before the kill"
        assert await relay.wait_exit() == -9
        acked_before_kill = len(acked)  # every answer so far came from the killed process
        delivered_at_kill = backend.distinct
        # Leased by the dead process: at most these may be forwarded twice.
        in_flight_at_kill = deliveries_by_state(relay.db).get("in_flight", 0)
        killed.clear()
        await relay.start()
        await retry_until_acked()
        acked_at = loop.time() - t0
        # Every event, acked before or after the kill, must reach the backend, and
        # the relay must settle: every delivery recorded as delivered (so the count
        # of re-forwards below is final).
        delivered_ok = settled = False
        deadline = loop.time() + SETTLE
        try:
            await wait_for(
                lambda: backend.distinct >= N,
                deadline - loop.time(),
                f"the backend to receive all {N} keys",
                0.1,
            )
            delivered_ok = True
            await wait_for(
                lambda: deliveries_by_state(relay.db) == {"delivered": N},
                max(0.0, deadline - loop.time()),
                "every delivery to be recorded as delivered",
                0.2,
            )
            settled = True
        except AssertionError as exc:
            print(exc)
    figures = {
        "sent": N,
        "acked_before_kill": acked_before_kill,
        "delivered_at_kill": delivered_at_kill,
        "in_flight_at_kill": in_flight_at_kill,
        "acked_total": len(acked),
        "replayed_on_retry": len(replayed),
        "delivered": backend.distinct,
        "reforwarded": len(backend.repeated()),
        "max_copies": max(backend.received.values(), default=0),
        "route_concurrency": CONCURRENCY,
        "workers": workers,
        "seconds_to_ack_all": round(acked_at, 2),
        "seconds_to_deliver_all": round(loop.time() - t0, 2),
        "leases_recovered_logged": [e.get("deliveries") for e in relay.logged("leases_recovered")],
        "deliveries_by_state": deliveries_by_state(relay.db),
    }
    print(f"\nkill -9 figures: {json.dumps(figures)}")
    (tmp_path / "kill9-figures.json").write_text(json.dumps(figures, indent=2))

    missing = sorted(set(acked) - set(backend.received))
    assert delivered_ok and not missing, f"{len(missing)} acked keys not delivered: {missing[:10]}"
    if not settled:
        raise NotSettled(
            f"{SETTLE}s after the restart the relay still has undelivered deliveries"
            f" {deliveries_by_state(relay.db)}: the {in_flight_at_kill} leases of the killed"
            " process are not recovered"
        )
    assert set(backend.received) <= set(keys)
    assert len(acked) == N
    # Sent and not recorded at the kill, so re-forwarded at most: per process,
    # `concurrency` attempts plus at most as many answered ones whose outcome was
    # still being recorded (dispatcher.py); with workers, per worker.
    assert figures["reforwarded"] <= 2 * CONCURRENCY * max(1, workers)
    # Leased at the kill: those, plus up to `concurrency` leased ahead and never sent.
    assert in_flight_at_kill <= 3 * CONCURRENCY * max(1, workers)
    assert figures["reforwarded"] <= in_flight_at_kill
    assert len(backend.repeated()) <= in_flight_at_kill, backend.repeated()
    assert all(n <= 2 for n in backend.received.values())
    assert await relay.stop() == 0
