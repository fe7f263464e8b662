"""Queue (store-and-forward) mode over real sockets and a real SQLite file."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from relay.housekeeping import purge_once
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import EventFilter
from tests.integration.conftest import Backend, RelayFactory, dispatcher_of, route

FAST_RETRY = {"initial": "10ms", "max": "50ms", "max_attempts": 5}


def queue_route(upstream: Backend, **extra: Any) -> dict[str, Any]:
    return {**route(upstream, path="/webhooks/orders"), **extra}


async def post(client: Any, key: str, body: bytes = b"{}", path: str = "/webhooks/orders") -> Any:
    return await client.post(path, data=body, headers={"Idempotency-Key": key})


async def test_event_is_acked_then_delivered_once(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(queue_route(upstream))
    body = b'{"order": 1, "bytes": "\xc3\xa9"}'
    first = await post(client, "evt_1", body)
    assert first.status == 202
    ack = await first.json()
    assert ack["status"] == "accepted" and isinstance(ack["event_id"], int)
    dup = await post(client, "evt_1", body)
    assert dup.status == 202
    assert dup.headers["Idempotent-Replayed"] == "true"
    assert (await dup.json())["event_id"] == ack["event_id"]
    await upstream.wait_for(1)
    (seen,) = upstream.seen
    assert seen.body == body and seen.key == "evt_1" and seen.path_qs == "/orders"
    # The hop's X-Forwarded-* were kept with the event for the later delivery.
    forwarded = {k.lower(): v for k, v in seen.headers if k.lower().startswith("x-forwarded-")}
    assert forwarded["x-forwarded-for"] == "127.0.0.1"
    assert forwarded["x-forwarded-proto"] == "http"
    # A duplicate after delivery is still absorbed.
    assert (await post(client, "evt_1", body)).status == 202
    info = await client.app[OWN_STORE].get_event(ack["event_id"])
    assert info is not None and info.duplicates == 2
    assert [d.state for d in info.deliveries] == ["delivered"]
    assert len(upstream.seen) == 1


async def test_configured_ack(upstream: Backend, make_relay: RelayFactory) -> None:
    client = await make_relay(
        queue_route(upstream, ack={"status": 200, "body": "ok", "content_type": "text/plain"}),
        start_dispatcher=False,
    )
    r = await post(client, "a")
    assert (r.status, await r.text(), r.headers["Content-Type"]) == (200, "ok", "text/plain")


async def test_backend_failing_twice_then_succeeding(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def flaky(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=500 if n <= 2 else 200)

    upstream.behaviour = flaky
    client = await make_relay(queue_route(upstream, retry=FAST_RETRY))
    ack = await (await post(client, "evt")).json()
    await upstream.wait_for(3)
    store = client.app[OWN_STORE]
    async with asyncio.timeout(5):
        while (info := await store.get_event(ack["event_id"])) is None or info.deliveries[
            0
        ].state != "delivered":
            await asyncio.sleep(0.01)
    assert [a.status for a in info.attempts] == [500, 500, 200]
    assert info.deliveries[0].attempts == 3
    assert upstream.keys() == ["evt", "evt", "evt"]


async def test_retry_after_is_honoured_and_capped(
    upstream: Backend, make_relay: RelayFactory, now_clock: Any
) -> None:
    answers = iter([("120", 429), ("999999", 503)])

    async def busy(_request: web.Request, _n: int) -> web.StreamResponse:
        retry_after, status = next(answers, ("", 200))
        return web.Response(
            status=status, headers={"Retry-After": retry_after} if retry_after else {}
        )

    upstream.behaviour = busy
    client = await make_relay(
        queue_route(upstream, retry={"initial": "10ms", "max": "10m"}), start_dispatcher=False
    )
    dispatcher = dispatcher_of(client)
    store = client.app[OWN_STORE]
    event_id = (await (await post(client, "e")).json())["event_id"]
    assert await dispatcher.burst() == 1
    info = await store.get_event(event_id)
    assert info is not None
    # Retry-After: 120 is honoured although the backoff alone would be milliseconds.
    assert info.deliveries[0].next_attempt_at >= now_clock() + 119  # the clock runs on
    assert await dispatcher.burst() == 0  # not due yet
    now_clock.advance(121)
    assert await dispatcher.burst() == 1
    info = await store.get_event(event_id)
    assert info is not None
    # A hostile Retry-After is capped by retry.max (10 minutes).
    wait = info.deliveries[0].next_attempt_at - now_clock()
    assert 0 < wait <= 600
    now_clock.advance(601)
    assert await dispatcher.burst() == 1
    info = await store.get_event(event_id)
    assert info is not None and info.deliveries[0].state == "delivered"


async def test_final_4xx_goes_dead_and_sender_redelivery_revives_it(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def gone_then_ok(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410 if n == 1 else 200)

    upstream.behaviour = gone_then_ok
    client = await make_relay(queue_route(upstream), start_dispatcher=False)
    dispatcher = dispatcher_of(client)
    store = client.app[OWN_STORE]
    event_id = (await (await post(client, "e")).json())["event_id"]
    assert await dispatcher.burst() == 1
    info = await store.get_event(event_id)
    assert info is not None
    assert (info.deliveries[0].state, info.deliveries[0].reason) == ("dead", "status 410")
    assert await dispatcher.burst() == 0  # dead is final
    again = await post(client, "e")
    assert again.status == 202 and again.headers["Idempotent-Replayed"] == "true"
    assert await dispatcher.burst() == 1
    info = await store.get_event(event_id)
    assert info is not None and info.deliveries[0].state == "delivered"
    assert len(upstream.seen) == 2


async def test_max_attempts_leads_to_dead(
    upstream: Backend, make_relay: RelayFactory, now_clock: Any
) -> None:
    async def down(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=503)

    upstream.behaviour = down
    client = await make_relay(
        queue_route(upstream, retry={"initial": "1s", "max": "1s", "max_attempts": 3}),
        start_dispatcher=False,
    )
    dispatcher = dispatcher_of(client)
    event_id = (await (await post(client, "e")).json())["event_id"]
    for _ in range(3):
        assert await dispatcher.burst() == 1
        now_clock.advance(2)
    info = await client.app[OWN_STORE].get_event(event_id)
    assert info is not None
    assert info.deliveries[0].state == "dead"
    assert "max_attempts" in (info.deliveries[0].reason or "")
    assert len(upstream.seen) == 3


async def test_fan_out_to_two_upstreams_where_one_is_down(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    down = "http://127.0.0.1:9/never"
    client = await make_relay(
        {
            "name": "orders",
            "path": "/webhooks/orders",
            "upstreams": [upstream.url("/a"), down],
            "retry": {"initial": "1s", "max": "1s"},
            "timeout": {"connect": "200ms", "total": "1s"},
        },
        start_dispatcher=False,
    )
    event_id = (await (await post(client, "e")).json())["event_id"]
    await dispatcher_of(client).burst()
    info = await client.app[OWN_STORE].get_event(event_id)
    assert info is not None
    states = {d.upstream: (d.state, d.attempts) for d in info.deliveries}
    assert states == {upstream.url("/a"): ("delivered", 1), down: ("pending", 1)}
    assert [s.path_qs for s in upstream.seen] == ["/a"]
    assert info.attempts[-1].error is not None and info.attempts[-1].error.startswith("connect")


async def test_backpressure_answers_503_past_max_pending(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(queue_route(upstream, max_pending=5), start_dispatcher=False)
    for i in range(5):
        assert (await post(client, f"k{i}")).status == 202
    full = await post(client, "k5")
    assert full.status == 503
    assert int(full.headers["Retry-After"]) > 0
    assert (await full.json())["error"] == "backpressure"
    # The refused event was not stored: once drained (the counts follow the
    # deliveries as they settle), the sender's retry is accepted.
    await dispatcher_of(client).burst()
    assert client.app[RELAY].backlog.snapshot() == {"orders": 0.0}
    assert (await post(client, "k5")).status == 202
    assert len(upstream.seen) == 5


async def test_store_failure_answers_503_never_2xx(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(queue_route(upstream), start_dispatcher=False)
    await client.app[OWN_STORE].close()
    r = await post(client, "k")
    assert r.status == 503
    assert r.headers["Retry-After"] == "5"
    assert (await r.json())["error"] == "store_unavailable"


async def test_dispatcher_is_woken_not_polled(upstream: Backend, make_relay: RelayFactory) -> None:
    client = await make_relay(queue_route(upstream))
    dispatcher_of(client).poll_interval = 3600  # the safety-net poll would never fire here
    for i in range(20):
        assert (await post(client, f"k{i}")).status == 202
    await upstream.wait_for(20, timeout=5)
    assert sorted(upstream.keys(), key=str) == sorted(f"k{i}" for i in range(20))


async def test_retention_keeps_the_store_bounded(
    upstream: Backend, make_relay: RelayFactory, now_clock: Any
) -> None:
    client = await make_relay(
        queue_route(upstream),
        storage={"dedupe_window": "1h", "payload_retention": "1m"},
        start_dispatcher=False,
    )
    relay = client.app[RELAY]
    for cycle in range(3):
        for i in range(50):
            assert (await post(client, f"c{cycle}-{i}")).status == 202
        await dispatcher_of(client).burst()
        now_clock.advance(120)
        await purge_once(relay, client.app[OWN_STORE])
        events = await client.app[OWN_STORE].list_events(EventFilter(), limit=1000)
        assert all(e.body is None for e in events)  # payloads dropped after a minute
        now_clock.advance(3600)
        await purge_once(relay, client.app[OWN_STORE])
        assert await client.app[OWN_STORE].list_events(EventFilter(), limit=1000) == []
    # Purged keys are accepted again: the dedupe window is over.
    assert (await post(client, "c0-0")).headers.get("Idempotent-Replayed") is None


async def test_pending_work_is_never_purged(
    upstream: Backend, make_relay: RelayFactory, now_clock: Any
) -> None:
    client = await make_relay(
        queue_route(upstream), storage={"dedupe_window": "1h"}, start_dispatcher=False
    )
    relay = client.app[RELAY]
    await post(client, "waiting")
    now_clock.advance(30 * 86400)
    await purge_once(relay, client.app[OWN_STORE])
    (event,) = await client.app[OWN_STORE].list_events(EventFilter(), limit=10)
    assert event.deliveries[0].state == "pending"
    await dispatcher_of(client).burst()
    assert upstream.keys() == ["waiting"]
