"""Filters with a running relay and a real backend: a dropped event is stored as
``filtered`` and its retries absorbed, a rule sends an event to an alternate, shadow
mode only counts, sync and hybrid routes say ``filtered``, and a replay sends a
filtered event after all; each checked at the backend and in the relay's store."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.intake.replies import REPLAYED
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, eventually, route

Client = TestClient[web.Request, web.Application]

PING = {"name": "ping", "when": {"header": {"X-GitHub-Event": {"eq": "ping"}}}, "action": "drop"}


async def deliveries(client: Client, event_id: int, want: str) -> list[tuple[str, str, str | None]]:
    """(upstream, state, reason) of the event's deliveries, once the first is ``want``."""
    store = client.app[OWN_STORE]
    found: list[tuple[str, str, str | None]] = []

    async def reached() -> bool:
        info = await store.get_event(event_id)
        found[:] = (
            [] if info is None else [(d.upstream, d.state, d.reason) for d in info.deliveries]
        )
        return bool(found) and found[0][1] == want

    await eventually(reached, f"event {event_id}'s delivery {want}")
    return found


def filtered(client: Client, rule: str, action: str = "drop") -> float | None:
    return client.app[RELAY].metrics.registry.get_sample_value(
        "relay_filtered_total", {"route": "orders", "rule": rule, "action": action}
    )


async def send(client: Client, key: str, event: str = "push", body: Any = None) -> Any:
    headers = {"Idempotency-Key": key, "X-GitHub-Event": event}
    return await client.post("/hooks/orders", data=json.dumps(body or {}), headers=headers)


async def test_a_dropped_event_is_kept_filtered_its_retries_absorbed_and_a_replay_sends_it(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    client = await make_relay(route(upstream, filters=[PING]))
    assert filtered(client, "ping") == 0  # there from the start
    first = await send(client, "g1", "ping")
    assert first.status == 202
    event_id = (await first.json())["event_id"]
    assert await deliveries(client, event_id, "filtered") == [
        (upstream.url("/orders"), "filtered", "ping")
    ]
    again = await send(client, "g1", "ping")
    assert (again.status, again.headers.get(REPLAYED)) == (202, "true")
    # An event the rule lets through is delivered; the dropped one never was.
    other = await send(client, "g2", "push")
    await deliveries(client, (await other.json())["event_id"], "delivered")
    assert upstream.keys() == ["g2"]
    assert filtered(client, "ping") == 2
    admin = await make_admin(client)
    resp = await admin.post(
        "/api/v1/replay", json={"route": "orders", "state": "filtered", "reason": "rule was wrong"}
    )
    assert (resp.status, await resp.json()) == (200, {"requeued": 1, "force": False})
    await deliveries(client, event_id, "delivered")
    assert sorted(s.key or "" for s in upstream.seen) == ["g1", "g2"]


async def test_a_rule_sends_invoices_to_an_alternate_upstream(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    invoices = {
        "name": "invoices",
        "when": {"json": {"$.type": {"matches": "^invoice\\."}}},
        "action": {"upstream": "billing"},
    }
    alternate = {"name": "billing", "url": upstream.url("/billing")}
    client = await make_relay(route(upstream, filters=[invoices], alternates=[alternate]))
    paid = await send(client, "in_1", body={"type": "invoice.paid"})
    charge = await send(client, "ch_1", body={"type": "charge.succeeded"})
    assert await deliveries(client, (await paid.json())["event_id"], "delivered") == [
        (upstream.url("/billing"), "delivered", None)
    ]
    await deliveries(client, (await charge.json())["event_id"], "delivered")
    assert sorted((s.path_qs, s.key) for s in upstream.seen) == [
        ("/billing", "in_1"),
        ("/orders", "ch_1"),
    ]
    assert filtered(client, "invoices", "upstream") == 1


async def test_under_shadow_a_rule_only_counts(make_relay: RelayFactory, upstream: Backend) -> None:
    client = await make_relay(route(upstream, filters=[PING], dedupe="shadow"))
    resp = await send(client, "s1", "ping")
    await deliveries(client, (await resp.json())["event_id"], "delivered")
    assert upstream.keys() == ["s1"]
    assert filtered(client, "ping") == 1


async def test_sync_and_hybrid_routes_answer_filtered(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(
        route(upstream, filters=[PING], mode="sync"),
        route(upstream, name="fast", filters=[PING], mode="hybrid"),
    )
    for path in ("/hooks/orders", "/hooks/fast"):
        for attempt in (1, 2):
            resp = await client.post(
                path, data=b"{}", headers={"Idempotency-Key": "p1", "X-GitHub-Event": "ping"}
            )
            doc = await resp.json()
            assert (resp.status, doc["status"]) == (200, "filtered"), path
            assert resp.headers.get(REPLAYED) == (None if attempt == 1 else "true")
        assert await deliveries(client, doc["event_id"], "filtered") == [
            (upstream.url(path.replace("/hooks", "")), "filtered", "ping")
        ]
    assert upstream.seen == []


async def test_one_filtered_event_is_replayed_by_its_id(
    make_relay: RelayFactory, make_admin: AdminFactory, upstream: Backend
) -> None:
    client = await make_relay(route(upstream, filters=[PING]))
    admin = await make_admin(client)
    event_id = (await (await send(client, "one", "ping")).json())["event_id"]
    await deliveries(client, event_id, "filtered")
    # A bulk replay without a state leaves what a filter dropped alone.
    bulk = await admin.post("/api/v1/replay", json={"route": "orders", "reason": "dead ones"})
    assert (await bulk.json())["requeued"] == 0
    json_type = {"Content-Type": "application/json"}
    resp = await admin.post(f"/api/v1/events/{event_id}/replay", headers=json_type)
    assert resp.status == 200, await resp.text()
    await deliveries(client, event_id, "delivered")
    assert upstream.keys() == ["one"]
