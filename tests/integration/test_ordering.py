"""Per-key ordering and stale suppression over real sockets and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.delivery.dispatcher import LEASE_MARGIN, Dispatcher
from relay.logging import get_logger
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import Attempt, EventFilter, NewEvent, Outcome, Store
from relay.store.sqlite import SQLiteStore
from tests.conftest import FakeClock
from tests.integration.conftest import Backend, RelayFactory, dispatcher_of, route

Client = TestClient[web.Request, web.Application]
WAIT = 10.0
UP = "http://127.0.0.1:9/x"


def ordered_route(upstream: Backend, name: str = "orders", **extra: Any) -> dict[str, Any]:
    ordered = {"idempotency": {"key": "json:$.id"}, "ordering": {"key": "json:$.k"}}
    return {**route(upstream, name, path=f"/webhooks/{name}", **ordered), **extra}


def body(k: str, s: int, v: Any = None, **extra: Any) -> bytes:
    doc: dict[str, Any] = {"id": f"{k}-{s}", "k": k, "s": s, **extra}
    if v is not None:
        doc["v"] = v
    return json.dumps(doc).encode()


async def post(client: Client, data: bytes, name: str = "orders") -> int:
    resp = await client.post(f"/webhooks/{name}", data=data)
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["event_id"])


def arrivals(upstream: Backend, path: str | None = None) -> list[tuple[str, int]]:
    """(ordering key, sequence number) of every request, in arrival order."""
    out = []
    for seen in upstream.seen:
        if path is None or seen.path_qs == path:
            doc = json.loads(seen.body)
            out.append((doc["k"], doc["s"]))
    return out


def per_key(order: list[tuple[str, int]]) -> dict[str, list[int]]:
    got: dict[str, list[int]] = defaultdict(list)
    for k, s in order:
        got[k].append(s)
    return dict(got)


async def until(cond: Callable[[], Awaitable[bool]], what: str, timeout: float = WAIT) -> None:
    """Poll a condition (bounded): the store's state changes after the backend answered."""
    async with asyncio.timeout(timeout):
        while not await cond():
            await asyncio.sleep(0.005)
    assert await cond(), what


async def states(store: Store, event_id: int) -> list[tuple[str, str | None]]:
    info = await store.get_event(event_id)
    assert info is not None
    return [(d.state, d.reason) for d in info.deliveries]


def sample(client: Client, name: str, labels: dict[str, str]) -> float:
    value = client.app[RELAY].metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else float(value)


# --- ordering ------------------------------------------------------------------

KEYS = 20
PER_KEY = 20
BACKEND_MS = 20


async def test_per_key_order_holds_while_keys_run_in_parallel(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    """20 keys x 20 events, interleaved; a backend taking ~20 ms per request.

    The same load goes to an ordered and an unordered route; each is delivered
    by its own real dispatcher loop, timed from start to the last delivery.
    """
    unordered_route = ordered_route(upstream, "unordered", concurrency=32)
    del unordered_route["ordering"]
    client = await make_relay(
        ordered_route(upstream, "ordered", concurrency=32), unordered_route, start_dispatcher=False
    )
    relay = client.app[RELAY]
    assert relay.routes["/webhooks/unordered"].cfg.ordering is None
    keys = [f"cus_{i:02d}" for i in range(KEYS)]

    async def sender(k: str) -> None:
        # One sender per key: a key's events are accepted in this order; the
        # keys' senders run at once, so the keys interleave in the store.
        for s in range(PER_KEY):
            for name in ("ordered", "unordered"):
                await post(client, body(k, s), name)

    await asyncio.gather(*(sender(k) for k in keys))

    inflight: Counter[str] = Counter()
    most_per_key: Counter[str] = Counter()
    most_at_once = 0

    async def slow(request: web.Request, _n: int) -> web.StreamResponse:
        nonlocal most_at_once
        k = json.loads(await request.read())["k"]
        scope = f"{request.path}:{k}"
        inflight[scope] += 1
        most_per_key[scope] = max(most_per_key[scope], inflight[scope])
        most_at_once = max(most_at_once, sum(inflight.values()))
        try:
            await asyncio.sleep(BACKEND_MS / 1000)
        finally:
            inflight[scope] -= 1
        return web.json_response({"ok": True})

    upstream.behaviour = slow
    assert relay.session is not None
    elapsed: dict[str, float] = {}
    widest: dict[str, int] = {}
    for name in ("ordered", "unordered"):
        most_at_once = 0
        rt = relay.routes[f"/webhooks/{name}"]
        dispatcher = Dispatcher(relay.store, relay.session, relay.metrics, get_logger())
        t0 = time.perf_counter()
        dispatcher.set_routes([rt])

        async def drained(route: str = name) -> bool:
            return (await client.app[OWN_STORE].undelivered_counts()).get(route, 0) == 0

        await until(drained, f"{name}: everything delivered", timeout=30)
        elapsed[name] = time.perf_counter() - t0
        widest[name] = most_at_once
        await dispatcher.stop(5)

    n = KEYS * PER_KEY
    print(
        f"\nordering throughput ({KEYS} keys x {PER_KEY} events, backend {BACKEND_MS} ms,"
        f" concurrency 32): ordered {elapsed['ordered']:.3f}s ({n / elapsed['ordered']:.0f}/s,"
        f" {widest['ordered']} at once), unordered {elapsed['unordered']:.3f}s"
        f" ({n / elapsed['unordered']:.0f}/s, {widest['unordered']} at once);"
        f" ordering costs x{elapsed['ordered'] / elapsed['unordered']:.2f}"
    )
    ordered = per_key(arrivals(upstream, "/ordered"))
    assert ordered == {k: list(range(PER_KEY)) for k in keys}  # acceptance order, exactly once
    assert max(v for s, v in most_per_key.items() if s.startswith("/ordered:")) == 1
    unordered = per_key(arrivals(upstream, "/unordered"))
    assert {k: sorted(v) for k, v in unordered.items()} == ordered
    # Keys ran in parallel: many requests at once, and faster than one at a time
    # (400 x 20 ms = 8 s serial).
    assert widest["ordered"] >= KEYS // 2
    assert elapsed["ordered"] < n * BACKEND_MS / 1000


async def test_failing_head_blocks_only_its_own_key(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    # a's head fails at least twice and until all of b has arrived: b going through
    # while a's head is still failing is what shows it was not held up, on a busy
    # machine too (a fixed backoff would race b's five deliveries).
    def seen(event_id: str) -> int:
        return sum(json.loads(s.body)["id"] == event_id for s in upstream.seen)

    async def head_fails(request: web.Request, _n: int) -> web.StreamResponse:
        doc = json.loads(await request.read())
        if doc["id"] == "a-0" and (seen("a-0") <= 2 or seen("b-4") == 0):
            return web.Response(status=503)
        return web.json_response({"ok": True})

    upstream.behaviour = head_fails
    client = await make_relay(
        ordered_route(upstream, retry={"initial": "100ms", "max": "1s", "max_attempts": 100})
    )
    dispatcher_of(client).rand = lambda: 1.0  # backoff 100 ms, then 200 ms: no jitter
    for s in range(5):
        await post(client, body("a", s))
    for s in range(5):
        await post(client, body("b", s))

    async def drained() -> bool:
        return await client.app[OWN_STORE].undelivered_counts() == {}

    await until(drained, "all delivered")
    order = arrivals(upstream)
    keyed = per_key(order)
    heads = keyed["a"].count(0)
    assert heads >= 3
    assert keyed == {"a": [0] * heads + [1, 2, 3, 4], "b": [0, 1, 2, 3, 4]}
    # b was not held up by a's retries: all of it arrived before a's head succeeded.
    head_ok = [i for i, (k, s) in enumerate(order) if (k, s) == ("a", 0)][-1]
    assert max(i for i, (k, _) in enumerate(order) if k == "b") < head_ok
    assert len(upstream.seen) == heads + 4 + 5


async def test_events_without_an_ordering_key_are_unordered(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def fail_first(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n == 1 else 200)

    upstream.behaviour = fail_first
    client = await make_relay(ordered_route(upstream), start_dispatcher=False)
    first = await post(client, json.dumps({"id": "x-0", "s": 0}).encode())
    await post(client, json.dumps({"id": "x-1", "s": 1}).encode())
    assert await dispatcher_of(client).burst() == 2  # both at once: no key, no order
    assert await states(client.app[OWN_STORE], first) == [("pending", None)]


@pytest.mark.parametrize("on_dead", ["skip", "hold"])
async def test_dead_head_skip_or_hold(
    upstream: Backend, make_relay: RelayFactory, on_dead: str
) -> None:
    gone_once: set[str] = set()

    async def gone(request: web.Request, _n: int) -> web.StreamResponse:
        doc = json.loads(await request.read())
        if doc["id"] == "a-0" and "a-0" not in gone_once:
            gone_once.add("a-0")
            return web.Response(status=410)  # final: the head goes dead at once
        return web.json_response({"ok": True})

    upstream.behaviour = gone
    client = await make_relay(
        ordered_route(upstream, ordering={"key": "json:$.k", "on_dead": on_dead}),
        start_dispatcher=False,
    )
    dispatcher = dispatcher_of(client)
    head = await post(client, body("a", 0))
    later = [await post(client, body("a", s)) for s in (1, 2)]
    await post(client, body("b", 0))
    await dispatcher.burst()
    assert await states(client.app[OWN_STORE], head) == [("dead", "status 410")]
    labels = {"route": "orders", "on_dead": on_dead}
    assert sample(client, "relay_ordering_dead_heads_total", labels) == 1
    if on_dead == "skip":
        assert per_key(arrivals(upstream)) == {"a": [0, 1, 2], "b": [0]}
        return
    # hold: the key waits behind its dead head; other keys go on.
    assert per_key(arrivals(upstream)) == {"a": [0], "b": [0]}
    for event_id in later:
        assert await states(client.app[OWN_STORE], event_id) == [("pending", None)]
    assert (
        await client.app[OWN_STORE].next_due_at("orders", upstream.url("/orders"), hold_dead=True)
        is None
    )
    assert await dispatcher.burst() == 0
    # The sender delivers the head again: it is revived, delivered, and the key goes on.
    resp = await client.post("/webhooks/orders", data=body("a", 0))
    assert resp.headers["Idempotent-Replayed"] == "true"
    await dispatcher.burst()
    assert per_key(arrivals(upstream)) == {"a": [0, 0, 1, 2], "b": [0]}


async def test_held_key_is_released_by_purging_its_dead_head(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def gone_first(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=410 if n == 1 else 200)

    upstream.behaviour = gone_first
    client = await make_relay(
        ordered_route(upstream, ordering={"key": "json:$.k", "on_dead": "hold"}),
        start_dispatcher=False,
    )
    head = await post(client, body("a", 0))
    await post(client, body("a", 1))
    await dispatcher_of(client).burst()
    assert per_key(arrivals(upstream)) == {"a": [0]}
    assert await client.app[OWN_STORE].purge(EventFilter(ids=(head,))) == 1
    await dispatcher_of(client).burst()
    assert per_key(arrivals(upstream)) == {"a": [0, 1]}


# --- stale suppression -----------------------------------------------------------


def versioned(upstream: Backend, action: str = "drop", **stale: Any) -> dict[str, Any]:
    return ordered_route(upstream, stale={"version": "json:$.v", "action": action, **stale})


async def test_late_old_versions_are_dropped_as_stale(
    upstream: Backend,
    make_relay: RelayFactory,
    make_admin: Callable[[Client], Awaitable[Client]],
) -> None:
    client = await make_relay(versioned(upstream), start_dispatcher=False)
    dispatcher = dispatcher_of(client)
    await post(client, body("cus_1", 3, v=3))
    await dispatcher.burst()
    # v1 and v2 arrive late, after v3 was delivered.
    v1 = await post(client, body("cus_1", 1, v=1))
    v2 = await post(client, body("cus_1", 2, v=2))
    # Another key's versions are its own.
    other = await post(client, body("cus_2", 1, v=1))
    assert await dispatcher.burst() == 3
    assert arrivals(upstream) == [("cus_1", 3), ("cus_2", 1)]
    assert await states(client.app[OWN_STORE], v1) == [("stale", "version 1 <= delivered 3")]
    assert await states(client.app[OWN_STORE], v2) == [("stale", "version 2 <= delivered 3")]
    assert await states(client.app[OWN_STORE], other) == [("delivered", None)]
    info = await client.app[OWN_STORE].get_event(v1)
    assert info is not None and info.deliveries[0].attempts == 0 and info.attempts == ()
    assert (
        sample(client, "relay_deliveries_stale_total", {"route": "orders", "action": "drop"}) == 2
    )
    admin = await make_admin(client)
    detail = await (await admin.get(f"/api/v1/events/{v1}")).json()
    assert detail["deliveries"][0]["state"] == "stale"
    assert detail["deliveries"][0]["reason"] == "version 1 <= delivered 3"
    # Stale is finished work: not counted as undelivered (no backpressure from it).
    assert await client.app[OWN_STORE].undelivered_counts() == {}
    # A newer version goes through; equal is not stale unless configured.
    await post(client, body("cus_1", 4, v=4))
    await post(client, body("cus_1", 5, v="4.0"))
    await dispatcher.burst()
    assert arrivals(upstream)[2:] == [("cus_1", 4), ("cus_1", 5)]


async def test_out_of_order_acceptance_reaches_backend_as_newest_only(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    """v3, v1, v2 accepted in that order before anything is delivered: v3 only."""
    client = await make_relay(versioned(upstream), start_dispatcher=False)
    ids = [await post(client, body("cus_1", s, v=s)) for s in (3, 1, 2)]
    await dispatcher_of(client).burst()
    assert arrivals(upstream) == [("cus_1", 3)]
    store = client.app[OWN_STORE]
    assert [(await states(store, i))[0][0] for i in ids] == ["delivered", "stale", "stale"]


async def test_stale_action_deliver_only_counts(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(versioned(upstream, action="deliver"), start_dispatcher=False)
    ids = [await post(client, body("cus_1", s, v=s)) for s in (3, 1, 2)]
    await dispatcher_of(client).burst()
    assert arrivals(upstream) == [("cus_1", 3), ("cus_1", 1), ("cus_1", 2)]
    store = client.app[OWN_STORE]
    assert [(await states(store, i))[0][0] for i in ids] == ["delivered"] * 3
    labels = {"route": "orders", "action": "deliver"}
    assert sample(client, "relay_deliveries_stale_total", labels) == 2
    # The remembered version is the highest delivered (3), not the last (2).
    await post(client, body("cus_1", 4, v=2.5))
    await dispatcher_of(client).burst()
    assert sample(client, "relay_deliveries_stale_total", labels) == 3


async def test_equal_is_stale_with_timestamps(upstream: Backend, make_relay: RelayFactory) -> None:
    client = await make_relay(
        versioned(upstream, equal_is_stale=True, version="json:$.updated_at"),
        start_dispatcher=False,
    )
    await post(client, body("cus_1", 0, updated_at="2024-05-01T12:00:00Z"))
    await dispatcher_of(client).burst()
    same = await post(client, body("cus_1", 1, updated_at="2024-05-01T14:00:00+02:00"))
    await post(client, body("cus_1", 2, updated_at="2024-05-01T12:00:00.001Z"))
    await dispatcher_of(client).burst()
    assert arrivals(upstream) == [("cus_1", 0), ("cus_1", 2)]
    assert await states(client.app[OWN_STORE], same) == [
        ("stale", "version 2024-05-01T14:00:00+02:00 <= delivered 2024-05-01T12:00:00Z")
    ]


async def test_stale_needs_ordering(make_relay: RelayFactory, upstream: Backend) -> None:
    from relay.errors import ConfigError

    route = versioned(upstream)
    del route["ordering"]
    with pytest.raises(ConfigError) as err:
        await make_relay(route)
    assert any(e.startswith("routes[0].stale: needs ordering.key") for e in err.value.errors)


# --- the store: one delivery of a key at a time, across expiry and restarts ------


def event(key: str, ordering_key: str | None, version: str | None = None) -> NewEvent:
    return NewEvent(
        route="r",
        key=key,
        key_source="json:$.id",
        fingerprint="fp",
        method="POST",
        path="/r",
        query="",
        headers=(),
        body=b"{}",
        received_at=1_700_000_000.0,
        upstreams=(UP,),
        ordering_key=ordering_key,
        version=version,
    )


def tried(status: int | None = 200) -> Attempt:
    return Attempt(1_700_000_000.0, 1.0, status, None)


async def test_expired_head_lease_never_lets_two_of_a_key_overlap(
    store: Store, clock: FakeClock
) -> None:
    e1 = (await store.ingest(event("e1", "k"))).event_id
    e2 = (await store.ingest(event("e2", "k"))).event_id
    (old,) = await store.lease_due("r", UP, 10, lease_ttl=30)
    assert old.event_id == e1 and old.expires == clock.now + 30
    clock.advance(31)  # the holder hung; its lease ran out
    assert await store.release_expired_leases() == 1
    (new,) = await store.lease_due("r", UP, 10, lease_ttl=30)  # the head again, not e2
    assert new.event_id == e1 and new.token != old.token
    assert await store.lease_due("r", UP, 10, lease_ttl=30) == []
    assert not await store.finish_attempt(old, tried(), Outcome("delivered"))  # fenced
    assert await store.lease_due("r", UP, 10, lease_ttl=30) == []
    assert await store.finish_attempt(new, tried(), Outcome("delivered"))
    (nxt,) = await store.lease_due("r", UP, 10, lease_ttl=30)
    assert nxt.event_id == e2


async def test_an_older_event_requeued_waits_for_the_newer_one_in_flight(store: Store) -> None:
    e1 = (await store.ingest(event("e1", "k"))).event_id
    await store.ingest(event("e2", "k"))
    (head,) = await store.lease_due("r", UP, 10, lease_ttl=30)
    assert await store.finish_attempt(head, tried(410), Outcome("dead", reason="status 410"))
    (second,) = await store.lease_due("r", UP, 10, lease_ttl=30)  # skip: the key goes on
    assert await store.requeue(EventFilter(ids=(e1,))) == 1  # the operator replays e1
    # e1 is now the earliest open event of the key, but e2 is being sent: nothing more.
    assert await store.lease_due("r", UP, 10, lease_ttl=30) == []
    assert await store.finish_attempt(second, tried(), Outcome("delivered"))
    (again,) = await store.lease_due("r", UP, 10, lease_ttl=30)
    assert again.event_id == e1


async def test_hold_blocks_behind_a_dead_head_in_the_store(store: Store) -> None:
    await store.ingest(event("e1", "k"))
    e2 = (await store.ingest(event("e2", "k"))).event_id
    (head,) = await store.lease_due("r", UP, 10, lease_ttl=30, hold_dead=True)
    assert await store.finish_attempt(head, tried(410), Outcome("dead", reason="status 410"))
    assert await store.lease_due("r", UP, 10, lease_ttl=30, hold_dead=True) == []
    assert await store.next_due_at("r", UP, hold_dead=True) is None
    assert await store.next_due_at("r", UP) is not None
    (skipped,) = await store.lease_due("r", UP, 10, lease_ttl=30)
    assert skipped.event_id == e2


async def test_delivered_versions_survive_a_restart_and_keep_the_highest(
    tmp_path: Path, clock: FakeClock
) -> None:
    path = tmp_path / "relay.db"
    store = SQLiteStore(path, clock=clock)
    await store.open()
    for key, version in (("e3", "3"), ("e10", "10"), ("e2", "2")):
        await store.ingest(event(key, "k", version))
    for _ in range(3):
        (lease,) = await store.lease_due("r", UP, 10, lease_ttl=30)
        # Delivered in that order (as with stale action: deliver): 10 stays the highest.
        assert await store.finish_attempt(lease, tried(), Outcome("delivered"))
    await store.ingest(event("e4", "k", "4"))
    await store.close()  # a restart: only the file remains

    store = SQLiteStore(path, clock=clock)
    await store.open()
    try:
        (lease,) = await store.lease_due("r", UP, 10, lease_ttl=30)
        assert (lease.version, lease.delivered_version) == ("4", "10")
        assert await store.finish_attempt(lease, None, Outcome("stale", reason="stale"))
        info = await store.get_event(lease.event_id)
        assert info is not None
        assert [(d.state, d.attempts) for d in info.deliveries] == [("stale", 0)]
        # Forgotten with the dedupe window, like the keys they order.
        await store.purge_expired(clock.now + 1, clock.now + 1, 100)
        await store.ingest(event("e5", "k", "1"))
        (lease,) = await store.lease_due("r", UP, 10, lease_ttl=30)
        assert lease.delivered_version is None
    finally:
        await store.close()


async def test_a_lease_too_short_for_the_attempt_is_given_back_unused(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    """A stalled process must not start an attempt its lease cannot cover."""
    client = await make_relay(ordered_route(upstream), start_dispatcher=False)
    event_id = await post(client, body("a", 0))
    dispatcher = dispatcher_of(client)
    loop = dispatcher._loops[("orders", upstream.url("/orders"))]
    # timeout.total is 2 s: a lease with less than 2 s + the send margin left is not used.
    (lease,) = await client.app[OWN_STORE].lease_due(
        "orders", upstream.url("/orders"), 10, lease_ttl=3
    )
    await dispatcher.attempts.run(loop, lease)
    assert upstream.seen == []
    info = await client.app[OWN_STORE].get_event(event_id)
    assert info is not None
    assert [(d.state, d.attempts) for d in info.deliveries] == [("pending", 0)]
    # The dispatcher's own leases cover the attempt with room to spare.
    assert LEASE_MARGIN > 5
    assert await dispatcher.burst() == 1
    assert arrivals(upstream) == [("a", 0)]
