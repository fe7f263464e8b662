"""dedupe: shadow, with a running dispatcher and a real backend: everything goes
through, what enforcing would have done is counted, and enforcing later keeps it."""

from __future__ import annotations

import collections
import json
from pathlib import Path
from typing import Any

import yaml
from aiohttp import web

from relay.cli.render import render_list
from relay.intake.replies import REPLAYED
from relay.runtime import RELAY
from relay.sdnotify import Notifier
from relay.serve import OWN_STORE, reload_app
from relay.store.base import EventFilter
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, eventually, route


def sample(client: Any, name: str, **labels: str) -> float:
    value = client.app[RELAY].metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def send(
    client: Any, key: str, body: dict[str, Any] | None = None, path: str = "/hooks/orders"
) -> Any:
    data = json.dumps(body or {"id": key}).encode()
    return await client.post(path, data=data, headers={"Idempotency-Key": key})


async def test_queue_shadow_delivers_every_copy_then_enforce_absorbs_them(
    tmp_path: Path, upstream: Backend, make_relay: RelayFactory
) -> None:
    shadow = route(upstream, dedupe="shadow")
    client = await make_relay(shadow)
    keys = [f"e{i}" for i in range(20)]
    for _ in range(3):
        for key in keys:
            resp = await send(client, key)
            assert resp.status == 202 and REPLAYED not in resp.headers
    await upstream.wait_for(60)
    assert collections.Counter(upstream.keys()) == {k: 3 for k in keys}
    assert (
        sample(client, "relay_shadow_duplicates_total", route="orders", key_source="header") == 40
    )
    mismatched = await send(client, "e0", {"id": "e0", "changed": True})
    assert mismatched.status == 202
    assert sample(client, "relay_shadow_mismatches_total", route="orders") == 1
    await upstream.wait_for(61)
    store = client.app[OWN_STORE]
    (first,) = await store.list_events(EventFilter(key="e0"), limit=5)
    assert first.duplicates == 3 and first.mismatches == 1  # every copy counted on the first

    path = tmp_path / "enforce.yaml"
    path.write_text(yaml.safe_dump({"routes": [{**shadow, "dedupe": "enforce"}]}), "utf-8")
    assert reload_app(client.app, path, Notifier(""))
    for key in keys:
        resp = await send(client, key)
        assert resp.status == 202 and resp.headers[REPLAYED] == "true"
    # Absorbed: no new event was stored, so nothing new can reach the backend.
    stored = await store.list_events(EventFilter(), limit=1000)
    assert len(stored) == 20 + 40 + 1


async def test_sync_shadow_forwards_every_copy_then_enforce_replays(
    tmp_path: Path, upstream: Backend, make_relay: RelayFactory
) -> None:
    async def numbered(_request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({"n": n}, status=201)

    upstream.behaviour = numbered
    shadow = route(upstream, "pay", mode="sync", dedupe="shadow")
    client = await make_relay(shadow)
    answers = []
    for _ in range(3):
        resp = await send(client, "p1", path="/hooks/pay")
        assert resp.status == 201 and REPLAYED not in resp.headers
        answers.append((await resp.json())["n"])
    assert answers == [1, 2, 3]  # the backend's own answer, every time
    assert sample(client, "relay_shadow_duplicates_total", route="pay", key_source="header") == 2

    path = tmp_path / "enforce.yaml"
    path.write_text(yaml.safe_dump({"routes": [{**shadow, "dedupe": "enforce"}]}), "utf-8")
    assert reload_app(client.app, path, Notifier(""))
    resp = await send(client, "p1", path="/hooks/pay")
    assert resp.status == 201 and resp.headers[REPLAYED] == "true"
    assert (await resp.json())["n"] == 1  # the answer stored for the first copy
    assert len(upstream.seen) == 3


async def test_shadow_counts_would_be_stale_drops_and_sends_them(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    ordered = route(
        upstream,
        dedupe="shadow",
        idempotency={"key": "json:$.id"},
        ordering={"key": "json:$.k"},
        stale={"version": "json:$.v"},
    )
    client = await make_relay(ordered)
    for i, version in enumerate((2, 1)):
        resp = await send(client, f"s{i}", {"id": f"s{i}", "k": "cus", "v": version})
        assert resp.status == 202
    await upstream.wait_for(2)

    async def counted() -> bool:
        return sample(client, "relay_shadow_stale_total", route="orders") == 1

    await eventually(counted, "the older version counted as a would-be stale drop")
    assert sample(client, "relay_deliveries_stale_total", route="orders", action="drop") == 0


async def test_hybrid_shadow_answers_every_copy_in_line(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def numbered(_request: web.Request, n: int) -> web.StreamResponse:
        return web.json_response({"n": n}, status=201)

    upstream.behaviour = numbered
    client = await make_relay(route(upstream, mode="hybrid", dedupe="shadow"))
    answers = []
    for _ in range(3):
        resp = await send(client, "h1")
        assert resp.status == 201 and REPLAYED not in resp.headers
        answers.append((await resp.json())["n"])
    assert answers == [1, 2, 3]
    assert upstream.keys() == ["h1"] * 3  # the backend is sent the sender's own key
    assert sample(client, "relay_shadow_duplicates_total", route="orders", key_source="header") == 2


async def test_a_shadow_copy_is_shown_by_the_key_it_carried(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    client = await make_relay(route(upstream, dedupe="shadow"))
    admin = await make_admin(client)
    for _ in range(2):
        assert (await send(client, "evt_1")).status == 202
    doc = await (await admin.get("/api/v1/events?route=orders")).json()
    shown = sorted((e["key"], e["shadow_copy"]) for e in doc["events"])
    assert shown == [("evt_1", False), ("evt_1", True)]
    # What the CLI prints from it: no control character reaches a terminal.
    table = render_list(doc)
    assert "evt_1 (shadow copy)" in table and not any(ord(c) < 32 and c != "\n" for c in table)
    copy = next(e for e in doc["events"] if e["shadow_copy"])
    detail = await (await admin.get(f"/api/v1/events/{copy['id']}")).json()
    assert "a shadow copy of key 'evt_1'" in detail["dedupe"]["explanation"]
