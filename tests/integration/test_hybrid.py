"""Hybrid mode with a running dispatcher and a real backend: the backend's quick
final answer reaches the sender and its duplicates; anything else gets the queue."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiohttp import web

from relay.intake.replies import REPLAYED
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import EventFilter
from tests.integration.conftest import Backend, RelayFactory, eventually, route


def hybrid_route(upstream: Backend, wait: str = "300ms", **extra: Any) -> dict[str, Any]:
    retry = {"initial": "50ms", "max": "100ms"}
    return route(upstream, mode="hybrid", hybrid={"wait": wait}, retry=retry, **extra)


async def test_a_quick_final_answer_reaches_the_sender_and_its_duplicates(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def created(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.json_response({"invoice": 7}, status=201, headers={"X-Backend": "yes"})

    upstream.behaviour = created
    client = await make_relay(hybrid_route(upstream))
    first = await client.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "i1"})
    assert first.status == 201 and await first.json() == {"invoice": 7}
    assert first.content_type == "application/json" and REPLAYED not in first.headers
    again = await client.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "i1"})
    assert again.status == 201 and await again.json() == {"invoice": 7}
    assert again.headers[REPLAYED] == "true"
    assert upstream.keys() == ["i1"]
    (event,) = await client.app[OWN_STORE].list_events(EventFilter(), limit=5)
    assert event.deliveries[0].state == "delivered" and event.duplicates == 1


async def test_a_final_4xx_is_the_answer_too(upstream: Backend, make_relay: RelayFactory) -> None:
    async def gone(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.json_response({"error": "unknown customer"}, status=422)

    upstream.behaviour = gone
    client = await make_relay(hybrid_route(upstream))
    resp = await client.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "g1"})
    assert resp.status == 422 and await resp.json() == {"error": "unknown customer"}


async def test_a_slow_backend_gets_the_event_once_and_the_sender_202_on_time(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request, _n: int) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"late": True})

    upstream.behaviour = slow
    client = await make_relay(hybrid_route(upstream, wait="200ms"))
    started = time.monotonic()
    resp = await client.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "s1"})
    took = time.monotonic() - started
    assert resp.status == 202 and (await resp.json())["status"] == "accepted"
    assert 0.2 <= took < 3.0, took  # the wait, not the backend's hour
    await upstream.wait_for(1)
    release.set()
    relay = client.app[RELAY]

    async def delivered() -> bool:
        (e,) = await relay.store.list_events(EventFilter(), limit=5)  # type: ignore[attr-defined]
        return e.deliveries[0].state == "delivered"

    await eventually(delivered, "the slow attempt recorded as delivered")
    assert upstream.keys() == ["s1"]  # not abandoned, not sent again
    # A duplicate after the fact: the answer came too late to be kept, so the queue's ack.
    dup = await client.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "s1"})
    assert dup.status == 202 and dup.headers[REPLAYED] == "true"


async def test_a_failing_backend_gives_202_and_the_queue_retries(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def flaky(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n <= 2 else 200)

    upstream.behaviour = flaky
    client = await make_relay(hybrid_route(upstream))
    resp = await client.post("/hooks/orders", data=b"{}", headers={"Idempotency-Key": "f1"})
    assert resp.status == 202  # never the 503 of a committed event
    await upstream.wait_for(3)
    assert upstream.keys() == ["f1", "f1", "f1"]


async def test_a_duplicate_during_the_wait_gets_the_first_answer(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    release = asyncio.Event()

    async def held(_request: web.Request, n: int) -> web.StreamResponse:
        await release.wait()
        return web.json_response({"n": n}, status=200)

    upstream.behaviour = held
    client = await make_relay(hybrid_route(upstream, wait="2s"))
    headers = {"Idempotency-Key": "w1"}
    first = asyncio.ensure_future(client.post("/hooks/orders", data=b"{}", headers=headers))
    await upstream.wait_for(1)
    second = asyncio.ensure_future(client.post("/hooks/orders", data=b"{}", headers=headers))
    registry = client.app[RELAY].metrics.registry
    labels = {"route": "orders", "source": "header"}

    async def waiting() -> bool:  # counted as a duplicate just before it waits
        return registry.get_sample_value("relay_duplicates_total", labels) == 1

    await eventually(waiting, "the duplicate waiting for the first")
    release.set()
    a, b = await first, await second
    assert (a.status, await a.json()) == (200, {"n": 1})
    assert (b.status, await b.json(), b.headers[REPLAYED]) == (200, {"n": 1}, "true")
    assert upstream.keys() == ["w1"]
