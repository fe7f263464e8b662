"""Protecting the backend, with a running dispatcher and a real backend: the circuit
breaker through an outage, the rate limit through a drain and a bulk replay, pauses
through the admin API (and across two replicas on PostgreSQL)."""

from __future__ import annotations

import asyncio
import collections
import math
from pathlib import Path

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.admin import build_admin_app
from relay.config import from_mapping
from relay.metrics import Metrics
from relay.runtime import RELAY
from relay.serve import OWN_STORE, single_process_app
from tests.conftest import STORE_BACKENDS, FakeClock
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, eventually, route

Client = TestClient[web.Request, web.Application]


def sample(client: Client, name: str, **labels: str) -> float:
    value = client.app[RELAY].metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


class Clocked:
    """Answers for the ``upstream`` fixture: 503 while ``down``, 200 otherwise; records
    the loop time of every request and the keys it took."""

    def __init__(self, upstream: Backend) -> None:
        self.upstream = upstream
        upstream.behaviour = self.answer
        self.down = False
        self.times: list[float] = []
        self.attempts_while_down = 0
        self.delivered: list[str] = []

    def url(self, path: str = "/hook") -> str:
        return self.upstream.url(path)

    async def answer(self, request: web.Request, _n: int) -> web.StreamResponse:
        self.times.append(asyncio.get_running_loop().time())
        if self.down:
            self.attempts_while_down += 1
            return web.Response(status=503)
        self.delivered.append(request.headers.get("Idempotency-Key", ""))
        return web.json_response({"ok": True})

    async def wait_for_keys(self, keys: set[str], timeout: float = 10.0) -> None:
        async def arrived() -> bool:
            return keys <= set(self.delivered)

        await eventually(arrived, f"{len(keys)} keys delivered", timeout)

    def busiest_second(self, since: float) -> int:
        seconds = collections.Counter(math.floor(t - since) for t in self.times if t >= since)
        return max(seconds.values(), default=0)


@pytest.fixture
def backend(upstream: Backend) -> Clocked:
    return Clocked(upstream)


# The bucket bounds when attempts *start*: in any second, burst + rate. The backend sees
# them a delay later, and the delay varies (a busy loop, a batch of leases), so a
# second at the backend may hold what started up to this long before it.
ARRIVAL_JITTER = 0.25


def at_most_per_second(rate: float, burst: int) -> float:
    return burst + rate * (1 + ARRIVAL_JITTER)


async def post_keys(client: Client, keys: list[str], path: str = "/hooks/orders") -> None:
    for key in keys:
        resp = await client.post(path, data=b"{}", headers={"Idempotency-Key": key})
        assert resp.status == 202, await resp.text()


async def test_an_outage_is_probed_not_hammered_and_recovery_is_quick(
    backend: Clocked, make_relay: RelayFactory
) -> None:
    breaker = {"failures": 3, "probe_interval": "300ms", "ramp": "500ms"}
    retry = {"initial": "50ms", "max": "100ms", "max_attempts": 1000}
    client = await make_relay(route(backend, breaker=breaker, retry=retry, concurrency=4))
    up = backend.url("/orders")
    labels = {"route": "orders", "upstream": up}
    backend.down = True
    keys = [f"k{i:02d}" for i in range(40)]
    await post_keys(client, keys)

    def transitions(to: str) -> float:
        return sample(client, "relay_upstream_breaker_transitions_total", **labels, to=to)

    async def probed_thrice() -> bool:
        return transitions("half_open") >= 3

    await eventually(probed_thrice, "three probes of the dead backend")
    # While open only probes go out: besides the attempts that opened it (at most the
    # failures plus what was in flight), one attempt per probe, and each failing probe
    # opened it again.
    assert backend.attempts_while_down <= 3 + 4 + transitions("half_open")
    assert transitions("open") >= 1 + 2
    assert sample(client, "relay_upstream_breaker_state", **labels) in (1.0, 2.0)

    async def held() -> bool:
        return sample(client, "relay_deliveries_held", **labels, reason="breaker") > 0

    await eventually(held, "held deliveries counted")

    recovered = asyncio.get_running_loop().time()
    backend.down = False
    await backend.wait_for_keys(set(keys), timeout=10)
    last = max(backend.times)
    # The next probe (at most 1.2 x 300 ms away), then the ramp (500 ms), plus slack.
    assert last - recovered < 0.36 + 0.5 + 2.0, last - recovered
    assert collections.Counter(backend.delivered) == collections.Counter(keys)  # once each
    assert transitions("closed") == 1
    assert sample(client, "relay_upstream_breaker_state", **labels) == 0.0


async def test_a_drain_and_a_bulk_replay_keep_to_the_rate_limit(
    backend: Clocked, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    client = await make_relay(route(backend, rate_limit={"rate": "20/s", "burst": 2}))
    admin = await make_admin(client)
    assert (await admin.post("/api/v1/routes/orders/pause", json={"reason": "fill"})).status == 200
    keys = [f"d{i:02d}" for i in range(50)]
    await post_keys(client, keys)
    assert (await admin.post("/api/v1/routes/orders/resume", json={})).status == 200
    start = asyncio.get_running_loop().time()
    await backend.wait_for_keys(set(keys), timeout=10)
    elapsed = max(backend.times) - start
    assert backend.busiest_second(start) <= at_most_per_second(20, 2), backend.busiest_second(start)
    assert elapsed >= (50 - 2) / 20 * 0.9  # paced: not one burst
    # The backend's receipt comes before the relay records the outcome: the preview
    # below counts delivered events, so wait for the relay's record of every one.
    store = client.app[OWN_STORE]

    async def recorded() -> bool:
        return await store.undelivered_counts() == {}

    await eventually(recorded, "every delivery recorded")

    # A bulk replay of everything delivered goes through the same bucket.
    flt = {"route": "orders", "force": True}
    preview = await (await admin.post("/api/v1/replay", json={**flt, "preview": True})).json()
    assert preview == {
        "preview": True,
        "would_requeue": 50,
        "events": 50,
        "routes": {"orders": 50},
        "force": True,
    }
    by_query = await admin.post("/api/v1/replay?preview=true", json=flt)
    assert await by_query.json() == preview
    refused = await admin.post("/api/v1/replay", json=flt)
    assert refused.status == 400 and (await refused.json())["error"] == "reason_required"
    before = len(backend.times)
    again = asyncio.get_running_loop().time()
    done = await admin.post("/api/v1/replay", json={**flt, "reason": "backend lost a day"})
    assert (await done.json())["requeued"] == preview["would_requeue"]

    async def replayed() -> bool:
        return len(backend.times) >= before + 50

    await eventually(replayed, "the replay delivered")
    assert max(backend.times) - again >= (50 - 2) / 20 * 0.9  # paced too
    assert backend.busiest_second(again) <= at_most_per_second(20, 2), backend.busiest_second(again)
    audit = await (await admin.get("/api/v1/audit")).json()
    actions = [(e["action"], e["affected"], e["reason"]) for e in audit["entries"]]
    assert actions == [
        ("replay_bulk", 50, "backend lost a day"),
        ("resume", 1, None),
        ("pause", 1, "fill"),
    ]
    assert {e["credential"] for e in audit["entries"]} == {"loopback"}


async def test_a_paused_route_is_acked_and_held_while_others_deliver(
    backend: Clocked, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    client = await make_relay(route(backend, "orders"), route(backend, "other"))
    admin = await make_admin(client)
    resp = await admin.post("/api/v1/routes/orders/pause", json={"reason": "backend deploy"})
    assert await resp.json() == {"route": "orders", "upstream": None, "paused": True, "changed": 1}
    await post_keys(client, ["held-1", "held-2"])
    await post_keys(client, ["free-1"], path="/hooks/other")
    await backend.wait_for_keys({"free-1"})  # the dispatcher runs ...
    up = backend.url("/orders")

    async def counted() -> bool:
        labels = {"route": "orders", "upstream": up, "reason": "paused"}
        return sample(client, "relay_deliveries_held", **labels) == 2

    await eventually(counted, "two deliveries held as paused")
    assert "held-1" not in backend.delivered  # ... and holds the paused route
    status = await (await admin.get("/api/v1/status")).json()
    orders = next(r for r in status["routes"] if r["name"] == "orders")
    assert orders["paused"] is True and orders["pending"] == 2
    assert [p["reason"] for p in status["pauses"]] == ["backend deploy"]

    for bad, code in ((("nope", ""), 404), (("orders", "?upstream=http://x/"), 404)):
        name, query = bad
        assert (await admin.post(f"/api/v1/routes/{name}/pause{query}", json={})).status == code
    await admin.post("/api/v1/routes/orders/resume", json={})
    await backend.wait_for_keys({"held-1", "held-2"})
    assert collections.Counter(backend.delivered)["held-1"] == 1


@pytest.mark.postgres
async def test_a_pause_holds_for_another_replica_on_postgresql(
    tmp_path: Path, backend: Clocked
) -> None:
    clock = FakeClock()
    config = from_mapping({"routes": [route(backend)]}, env={}, base=tmp_path)
    async with STORE_BACKENDS["postgres"](tmp_path, clock) as make:
        apps: list[Client] = []
        try:
            for _ in range(2):
                app = single_process_app(config, store=make(), metrics=Metrics())
                client: Client = TestClient(TestServer(app))
                await client.start_server()
                apps.append(client)
            a, b = apps
            admin_a: Client = TestClient(
                TestServer(build_admin_app(a.app[RELAY], a.app[OWN_STORE]))
            )
            await admin_a.start_server()
            try:
                assert (await admin_a.post("/api/v1/routes/orders/pause", json={})).status == 200
                await post_keys(b, ["via-b"])
                up = backend.url("/orders")

                async def b_holds() -> bool:
                    labels = {"route": "orders", "upstream": up, "reason": "paused"}
                    return sample(b, "relay_deliveries_held", **labels) == 1

                await eventually(b_holds, "replica B holding its delivery as paused")
                assert backend.delivered == []
                assert (await admin_a.post("/api/v1/routes/orders/resume", json={})).status == 200
                await backend.wait_for_keys({"via-b"})
            finally:
                await admin_a.close()
        finally:
            for c in apps:
                await c.close()
