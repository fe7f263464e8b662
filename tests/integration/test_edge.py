"""allow_from and ingress_rate on a running relay: a source the route does not allow
gets 403 and nothing is stored; past the rate a sender gets 429 with Retry-After,
per route or per source (behind a trusted proxy, per client); both counted."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.records import EventFilter
from tests.integration.conftest import Backend, RelayFactory, route

Client = TestClient[web.Request, web.Application]


async def send(client: Client, key: str, **headers: str) -> Any:
    body = json.dumps({"id": key}).encode()
    return await client.post(
        "/hooks/orders", data=body, headers={"Idempotency-Key": key, **headers}
    )


def rejected(client: Client, reason: str) -> float | None:
    return client.app[RELAY].metrics.registry.get_sample_value(
        "relay_webhooks_rejected_total", {"route": "orders", "reason": reason}
    )


async def stored(client: Client) -> int:
    return len(await client.app[OWN_STORE].list_events(EventFilter(), 100))


async def test_a_source_outside_the_allowlist_is_refused_and_nothing_kept(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(route(upstream, allow_from=["10.0.0.0/8", "2001:db8::/32"]))
    assert rejected(client, "source_not_allowed") == 0
    resp = await send(client, f"k-{time.time_ns()}")
    assert resp.status == 403
    assert (await resp.json())["error"] == "source_not_allowed"
    # A made-up X-Forwarded-For from a peer nobody trusts changes nothing.
    resp = await send(client, f"k-{time.time_ns()}", **{"X-Forwarded-For": "10.1.2.3"})
    assert resp.status == 403
    assert rejected(client, "source_not_allowed") == 2
    assert await stored(client) == 0
    assert upstream.seen == []


async def test_behind_a_trusted_proxy_the_client_is_judged(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(
        route(upstream, allow_from=["3.18.12.63/32"]), trusted_proxies=["127.0.0.1/32"]
    )
    allowed = await send(client, f"k-{time.time_ns()}", **{"X-Forwarded-For": "3.18.12.63"})
    assert allowed.status == 202
    other = await send(client, f"k-{time.time_ns()}", **{"X-Forwarded-For": "198.51.100.9"})
    assert other.status == 403
    assert await stored(client) == 1


async def test_past_the_route_rate_a_sender_is_told_when_to_come_back(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(route(upstream, ingress_rate={"rate": "1/m", "burst": 2}))
    assert rejected(client, "rate_limited") == 0
    run = time.time_ns()
    assert (await send(client, f"a-{run}")).status == 202
    assert (await send(client, f"b-{run}")).status == 202
    refused = await send(client, f"c-{run}")
    assert refused.status == 429
    assert 1 <= int(refused.headers["Retry-After"]) <= 60
    assert (await refused.json())["error"] == "rate_limited"
    assert rejected(client, "rate_limited") == 1
    assert await stored(client) == 2


async def test_per_source_each_client_has_its_own_bucket(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    limited = route(upstream, ingress_rate={"rate": "1/m", "burst": 1, "per": "source"})
    client = await make_relay(limited, trusted_proxies=["127.0.0.1/32"])
    run = time.time_ns()
    first, second = ({"X-Forwarded-For": ip} for ip in ("192.0.2.1", "192.0.2.2"))
    assert (await send(client, f"a-{run}", **first)).status == 202
    assert (await send(client, f"b-{run}", **second)).status == 202
    assert (await send(client, f"c-{run}", **first)).status == 429
    assert (await send(client, f"d-{run}", **second)).status == 429
