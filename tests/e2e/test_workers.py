"""``workers: N``: one owner process with the store, N workers serving and delivering."""

from __future__ import annotations

import asyncio
import json
import os
import signal
from typing import Any

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from .support import (
    Backend,
    Relay,
    deliveries_by_state,
    post,
    post_many,
    queue_route,
    sync_route,
    wait_for,
)

WORKERS = 2


def worker_pids(relay: Relay) -> list[int]:
    return [int(e["pid"]) for e in relay.logged("worker_started")]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def scrape(session: aiohttp.ClientSession, relay: Relay) -> dict[str, float]:
    async with session.get(relay.admin_url("/metrics")) as resp:
        assert resp.status == 200
        text = await resp.text()
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = ",".join(f"{k}={v}" for k, v in sorted(s.labels.items()))
            out[f"{s.name}{{{labels}}}"] = s.value
    return out


async def test_workers_deliver_each_event_once(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], workers=WORKERS)
    await relay.start()
    pids = worker_pids(relay)
    assert len(set(pids)) == WORKERS and relay.proc is not None and relay.proc.pid not in pids
    keys = [f"k{i}" for i in range(300)]
    async with aiohttp.ClientSession() as session:
        # Many connections, so the kernel spreads them over both workers; every
        # key is sent twice, the copies racing each other on different workers.
        got = await post_many(session, relay.url("/q"), keys + keys, concurrency=48)
        assert set(got.values()) == {202}
        await wait_for(
            lambda: deliveries_by_state(relay.db).get("delivered", 0) == len(keys),
            30,
            "every event to be delivered",
        )
        assert backend.distinct == len(keys)
        assert backend.repeated() == {}
        # Counters summed over the workers in the owner's one scrape.
        m = await scrape(session, relay)
        accepted = m["relay_webhooks_received_total{outcome=accepted,route=q}"]
        duplicate = m["relay_webhooks_received_total{outcome=duplicate,route=q}"]
        assert (accepted, duplicate) == (len(keys), len(keys))
        delivered = m["relay_delivery_attempts_total{result=delivered,route=q,status_class=2xx}"]
        assert delivered == len(keys)
    assert await relay.stop() == 0
    assert not any(alive(p) for p in pids)


async def test_sync_storm_across_workers_forwards_once(relays: Any, start_backend: Any) -> None:
    backend = Backend()
    backend.hold = asyncio.Event()
    backend.hold_first = 1
    await start_backend(backend)
    relay = relays([sync_route(backend, sync={"wait": "20s"})], workers=WORKERS)
    await relay.start()
    # One session per sender: separate connections land on both workers.
    sessions = [aiohttp.ClientSession() for _ in range(24)]
    try:
        tasks = [asyncio.create_task(post(s, relay.url("/s"), "storm")) for s in sessions]
        await wait_for(lambda: backend.received["storm"] == 1, 10, "the original to arrive")
        backend.hold.set()
        answers = await asyncio.gather(*tasks)
    finally:
        for s in sessions:
            await s.close()
    assert backend.received["storm"] == 1
    assert {status for status, _, _ in answers} == {200}
    assert len({body for _, _, body in answers}) == 1
    assert sum(h.get("Idempotent-Replayed") == "true" for _, h, _ in answers) == len(answers) - 1
    assert await relay.stop() == 0


async def test_a_dead_worker_stops_the_group_and_restart_delivers(
    relays: Any, start_backend: Any
) -> None:
    backend = Backend()
    backend.hold = asyncio.Event()
    backend.hold_first = 10**6  # nothing is answered until the restart
    await start_backend(backend)
    relay = relays([queue_route(backend, timeout={"total": "30s"})], workers=WORKERS)
    await relay.start()
    async with aiohttp.ClientSession() as session:
        got = await post_many(session, relay.url("/q"), [f"d{i}" for i in range(40)])
        assert set(got.values()) == {202}
        await wait_for(lambda: backend.requests > 0, 10, "deliveries to be in flight")
        victim = worker_pids(relay)[0]
        os.kill(victim, signal.SIGKILL)
        # Like a dead dispatcher in one process: the service stops, non-zero.
        assert await relay.wait_exit() == 1
        assert relay.logged("worker_exited")
        assert not any(alive(p) for p in worker_pids(relay))
        backend.hold_first = 0
        backend.hold.set()
        await relay.start()
        await wait_for(
            lambda: deliveries_by_state(relay.db).get("delivered", 0) == 40,
            30,
            "every acked event to be delivered after the restart",
        )
    assert await relay.stop() == 0


async def test_owner_killed_takes_the_workers_down(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], workers=WORKERS)
    await relay.start()
    pids = worker_pids(relay)
    await relay.kill()
    # The workers lose their store connection and exit instead of answering 503 forever.
    await wait_for(lambda: not any(alive(p) for p in pids), 10, "the workers to exit")
    assert len(relay.logged("owner_lost")) == WORKERS
    await relay.start()  # the file lock was the dead owner's: free again
    async with aiohttp.ClientSession() as session:
        status, _, _ = await post(session, relay.url("/q"), "after")
        assert status == 202
    assert await relay.stop() == 0


async def test_reload_reaches_every_worker(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], workers=WORKERS)
    await relay.start()
    doc = relay.config_path.read_text(encoding="utf-8")
    import yaml

    cfg = yaml.safe_load(doc)
    cfg["routes"].append(queue_route(backend, "added"))
    relay.config_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
    relay.signal(signal.SIGHUP)
    await wait_for(
        lambda: len(relay.logged("config_reloaded")) == 1 + WORKERS,
        10,
        "the owner and every worker to reload",
    )
    sessions = [aiohttp.ClientSession() for _ in range(8)]
    try:
        answers = await asyncio.gather(
            *(post(s, relay.url("/added"), f"a{i}") for i, s in enumerate(sessions))
        )
    finally:
        for s in sessions:
            await s.close()
    assert {status for status, _, _ in answers} == {202}
    assert {json.loads(body)["status"] for _, _, body in answers} == {"accepted"}
    await wait_for(lambda: backend.distinct == 8, 10, "the new route's events to be delivered")
    assert await relay.stop() == 0


@pytest.mark.postgres
async def test_workers_on_postgresql(
    relays: Any, start_backend: Any, pg_schema: tuple[Any, str, str]
) -> None:
    """The owner is store-agnostic: the same group on PostgreSQL, in a schema of its own."""
    conn, schema, url = pg_schema
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], workers=WORKERS, storage={"url": url})
    await relay.start()
    keys = [f"pg{i}" for i in range(100)]
    async with aiohttp.ClientSession() as session:
        got = await post_many(session, relay.url("/q"), keys + keys, concurrency=32)
        assert set(got.values()) == {202}
        await wait_for(lambda: backend.distinct == len(keys), 30, "every key delivered")
        assert backend.repeated() == {}
        m = await scrape(session, relay)
        assert m["relay_webhooks_received_total{outcome=duplicate,route=q}"] == len(keys)
    assert await relay.stop() == 0
    states = await conn.fetch(f"SELECT state, count(*) FROM {schema}.deliveries GROUP BY state")
    assert {r["state"]: r["count"] for r in states} == {"delivered": len(keys)}


async def test_workers_pause_hybrid_and_shadow(relays: Any, start_backend: Any) -> None:
    """The newer route settings across the group: a pause held by every worker, hybrid
    answers in line (and replays), shadow counted in the owner's one scrape."""
    backend = await start_backend(Backend())
    routes = [
        queue_route(backend, "q"),
        queue_route(backend, "h", mode="hybrid", hybrid={"wait": "2s"}),
        queue_route(backend, "s", dedupe="shadow"),
    ]
    relay = relays(routes, workers=WORKERS)
    await relay.start()
    async with aiohttp.ClientSession() as session:
        async with session.post(relay.admin_url("/api/v1/routes/q/pause"), json={}) as resp:
            assert resp.status == 200
        held = [f"held-{i}" for i in range(20)]
        got = await post_many(session, relay.url("/q"), held, concurrency=8)
        assert set(got.values()) == {202}  # acked while paused, by either worker

        status, _, body = await post(session, relay.url("/h"), "hy-1")
        assert status == 200 and b'"hy-1"' in body  # the backend's own answer
        status, headers, body2 = await post(session, relay.url("/h"), "hy-1")
        assert (status, headers.get("Idempotent-Replayed"), body2) == (200, "true", body)

        for _ in range(3):
            assert (await post(session, relay.url("/s"), "sh-1"))[0] == 202
        await wait_for(lambda: backend.received["sh-1"] == 3, 10, "every shadow copy delivered")
        m = await scrape(session, relay)
        assert m["relay_shadow_duplicates_total{key_source=header,route=s}"] == 2
        assert not any(backend.received[k] for k in held)  # no worker delivered a paused one

        async with session.post(relay.admin_url("/api/v1/routes/q/resume"), json={}) as resp:
            assert (await resp.json())["changed"] == 1
        await wait_for(lambda: all(backend.received[k] == 1 for k in held), 15, "resumed")
    assert await relay.stop() == 0
    assert backend.repeated() == {"sh-1": 3}
