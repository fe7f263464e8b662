"""Per-key ordering across SIGKILL: the daemon as a process, the order checked at the backend."""

from __future__ import annotations

import asyncio
import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from .support import Backend, deliveries_by_state, post, queue_route, wait_for

KEYS = 20
PER_KEY = 30
N = KEYS * PER_KEY
# Start-up returns the killed process's leases to pending (one process per
# SQLite file); were they left to expire, their keys would wait timeout.total +
# 30 s and the next sweep. Bounded either way.
SETTLE = 90.0


class OrderBackend(Backend):
    """Records (ordering key, sequence) of every request in arrival order, and
    how many requests of one key it ever had at once."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay)
        self.arrivals: list[tuple[str, int]] = []
        self.inflight: Counter[str] = Counter()
        self.most_at_once: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.Response:
        doc = json.loads(await request.read())
        k, s = str(doc["k"]), int(doc["s"])
        self.arrivals.append((k, s))
        self.inflight[k] += 1
        self.most_at_once[k] = max(self.most_at_once[k], self.inflight[k])
        try:
            return await super().handle(request)
        finally:
            self.inflight[k] -= 1

    def per_key(self) -> dict[str, list[int]]:
        got: dict[str, list[int]] = defaultdict(list)
        for k, s in self.arrivals:
            got[k].append(s)
        return dict(got)


def event_body(k: str, s: int) -> bytes:
    return json.dumps({"id": f"{k}-{s:03d}", "k": k, "s": s, "v": s}).encode()


async def test_kill_9_mid_stream_keeps_per_key_order(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    backend = await start_backend(OrderBackend(delay=0.05))
    relay = relays(
        [
            queue_route(
                backend,
                concurrency=16,
                timeout={"total": "1s"},
                retry={"initial": "50ms", "max": "500ms", "max_attempts": 1000},
                idempotency={"key": "json:$.id", "require_key": True},
                ordering={"key": "json:$.k"},
                stale={"version": "json:$.v"},
            )
        ]
    )
    await relay.start()
    url = relay.url("/q")
    keys = [f"cus_{i:02d}" for i in range(KEYS)]
    acked: Counter[str] = Counter()  # per key: how many of its events are acked
    killed = asyncio.Event()
    restarted = asyncio.Event()
    figures: dict[str, Any] = {}

    async def sender(session: aiohttp.ClientSession, k: str) -> None:
        # A key's events are sent one after the other, each only once the one
        # before it was acked: acceptance order per key is the sequence number.
        for s in range(PER_KEY):
            while True:
                if killed.is_set() and not restarted.is_set():
                    await restarted.wait()
                try:
                    status, _, _ = await post(session, url, None, event_body(k, s), timeout=10)
                except (aiohttp.ClientError, TimeoutError):
                    continue  # no answer: maybe stored, maybe not; the retry is deduplicated
                if status == 503:
                    await asyncio.sleep(0.05)  # draining or store busy: the sender's retry
                    continue
                assert status == 202, status
                break
            acked[k] += 1
            if not killed.is_set() and sum(acked.values()) >= N // 3:
                # Mid-stream, synchronously: no other sender runs meanwhile.
                assert relay.proc is not None
                relay.proc.kill()
                killed.set()

    loop = asyncio.get_running_loop()
    t0 = loop.time()
    async with aiohttp.ClientSession() as session:
        senders = asyncio.gather(*(sender(session, k) for k in keys))
        await wait_for(killed.is_set, 30, "a third of the events to be acked")
        assert await relay.wait_exit() == -9
        figures["arrivals_at_kill"] = len(backend.arrivals)
        figures["in_flight_at_kill"] = deliveries_by_state(relay.db).get("in_flight", 0)
        # Else the kill tested nothing: no head was on the wire.
        assert figures["in_flight_at_kill"] >= 1, figures
        await relay.start()
        restarted.set()
        await senders
        figures["seconds_to_ack_all"] = round(loop.time() - t0, 2)

        await wait_for(
            lambda: deliveries_by_state(relay.db) == {"delivered": N},
            SETTLE,
            f"all {N} deliveries to be recorded as delivered",
            0.2,
        )
        figures["seconds_to_deliver_all"] = round(loop.time() - t0, 2)
        order = backend.per_key()
        repeats = {
            f"{k}-{s}": n for k, seq in order.items() for s, n in Counter(seq).items() if n > 1
        }
        figures.update(
            requests=len(backend.arrivals),
            reforwarded=repeats,
            leases_recovered=[e.get("deliveries") for e in relay.logged("leases_recovered")],
        )
        print(f"\nkill -9 ordering figures: {json.dumps(figures)}")
        (tmp_path / "ordering-kill9-figures.json").write_text(json.dumps(figures, indent=2))

        for k in keys:
            seq = order[k]
            # Every event arrived, and never one before an earlier one of its key:
            # the arrival sequence of a key never goes back (duplicates of the head
            # that was in flight at the kill come straight after it).
            assert sorted(set(seq)) == list(range(PER_KEY)), (k, seq)
            assert seq == sorted(seq), f"{k} arrived out of order: {seq}"
        assert max(backend.most_at_once.values()) == 1, backend.most_at_once
        # Only a delivery in flight at the kill may be forwarded twice.
        assert len(repeats) <= figures["in_flight_at_kill"], repeats
        assert all(n <= 2 for n in repeats.values()), repeats

        # The remembered versions survived the kill: an old version arriving now is stale.
        status, _, ack = await post(
            session, url, None, json.dumps({"id": "late", "k": keys[0], "s": 0, "v": 1}).encode()
        )
        assert status == 202
        event_id = json.loads(ack)["event_id"]

        async def stale() -> bool:
            async with session.get(relay.admin_url(f"/api/v1/events/{event_id}")) as resp:
                detail = await resp.json()
            return [d["state"] for d in detail["deliveries"]] == ["stale"]

        await wait_for(stale, 10, "the late old version to end stale")
        assert len(backend.arrivals) == figures["requests"]
    assert await relay.stop() == 0
