"""Notifications to a real receiving server: a dead letter fires once (however many
processes look), a reminder waits for its interval, a message that could not go is
sent again, clearing is said once, Slack's format, and a full store still notifies."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from relay.delivery import notify
from relay.delivery.notify import Notifications
from relay.disk import DiskSpace
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import EventFilter
from tests.integration.conftest import (
    AdminFactory,
    Backend,
    RelayFactory,
    eventually,
    route,
)


class Receiver:
    def __init__(self) -> None:
        self.got: list[tuple[str, Any]] = []
        self.fail = 0  # answer 500 to this many requests first

    async def handle(self, request: web.Request) -> web.Response:
        if self.fail:
            self.fail -= 1
            return web.Response(status=500)
        self.got.append((request.path, json.loads(await request.read())))
        return web.Response(status=204)


@pytest.fixture
async def receiver() -> AsyncIterator[tuple[Receiver, str]]:
    r = Receiver()
    app = web.Application()
    app.router.add_post("/{name}", r.handle)
    server = TestServer(app)
    await server.start_server()
    yield r, f"http://127.0.0.1:{server.port}"
    await server.close()


async def gone(_request: web.Request, _n: int) -> web.StreamResponse:
    return web.Response(status=410)


async def settle(*notifiers: Notifications) -> None:
    for n in notifiers:
        await asyncio.gather(*list(n.sending))


async def test_a_dead_letter_is_said_once_and_its_clearing_once(
    upstream: Backend,
    make_relay: RelayFactory,
    make_admin: AdminFactory,
    receiver: tuple[Receiver, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(notify, "RETRY_BASE", 0.01)
    got, base = receiver
    upstream.behaviour = gone
    public = await make_relay(
        route(upstream),
        notify=[
            {"name": "ops", "url_env": "HOOK", "interval": "1h"},
            {"name": "chat", "url_env": "SLACK", "format": "slack", "interval": "1h"},
        ],
        env={"HOOK": f"{base}/ops", "SLACK": f"{base}/chat"},
    )
    relay, store = public.app[RELAY], public.app[OWN_STORE]
    assert (await public.post("/hooks/orders", headers={"Idempotency-Key": "k1"})).status == 202

    async def dead() -> bool:
        return (await store.backlog())["orders"].dead == 1

    await eventually(dead, "the dead letter")
    # Two processes look at once (replicas, or an owner and a restarted one): one message.
    first, second = Notifications(relay, store), Notifications(relay, store)
    got.fail = 1  # and the first try of the first message fails: it is tried again
    await asyncio.gather(first.round(), second.round())
    await asyncio.gather(settle(first), settle(second))
    assert sorted(path for path, _ in got.got) == ["/chat", "/ops"]
    ops = next(body for path, body in got.got if path == "/ops")
    assert (ops["condition"], ops["state"]) == ("dead:orders", "firing")
    assert ops["summary"] == "route orders: 1 dead letters"
    chat = next(body for path, body in got.got if path == "/chat")
    assert chat["text"].startswith(":red_circle: webhook-relay on ")
    assert chat["text"].endswith("route orders: 1 dead letters")
    # Within the interval nothing more is said.
    await first.round()
    await settle(first)
    assert len(got.got) == 2

    # The dead letter goes (purged): its clearing is said, once.
    assert await store.purge(EventFilter(route="orders")) == 1
    await asyncio.gather(first.round(), second.round())
    await asyncio.gather(settle(first), settle(second))
    cleared = [body for path, body in got.got[2:] if path == "/ops"]
    assert [(c["condition"], c["state"]) for c in cleared] == [("dead:orders", "resolved")]
    assert len(got.got) == 4

    # The console's overview lists what was said.
    admin = await make_admin(public)
    page = await (await admin.get("/ui/")).text()
    assert "dead:orders cleared" in page and 'id="notices"' in page
    await first.close()
    await second.close()


async def test_a_full_store_still_notifies(
    upstream: Backend, make_relay: RelayFactory, receiver: tuple[Receiver, str]
) -> None:
    got, base = receiver
    public = await make_relay(
        route(upstream), notify=[{"url_env": "HOOK"}], env={"HOOK": f"{base}/ops"}
    )
    relay, store = public.app[RELAY], public.app[OWN_STORE]
    store.full = "the store is at its cap"
    n = Notifications(relay, store)
    await n.round()
    await settle(n)
    await n.close()
    assert [(b["condition"], b["summary"]) for _, b in got.got] == [
        ("store_full", "the store is at its cap")
    ]


async def test_a_store_near_its_cap_is_said_before_it_refuses(
    upstream: Backend, make_relay: RelayFactory, receiver: tuple[Receiver, str]
) -> None:
    got, base = receiver
    public = await make_relay(
        route(upstream),
        storage={"max_bytes": "1MiB"},
        notify=[{"url_env": "HOOK"}],
        env={"HOOK": f"{base}/ops"},
    )
    relay, store = public.app[RELAY], public.app[OWN_STORE]
    for i in range(40):  # about 1 MiB of bodies: over 90 % of the cap
        resp = await public.post(
            "/hooks/orders", data=b"x" * 24_000, headers={"Idempotency-Key": f"k{i}"}
        )
        assert resp.status == 202
    n = Notifications(relay, store)
    await n.round()
    await settle(n)
    await n.close()
    conditions = [b["condition"] for _, b in got.got]
    assert "store_near_cap" in conditions, conditions


async def test_a_disk_near_min_free_is_said_before_ingest_stops(
    upstream: Backend, make_relay: RelayFactory, receiver: tuple[Receiver, str], tmp_path: Path
) -> None:
    got, base = receiver
    public = await make_relay(
        route(upstream), notify=[{"url_env": "HOOK"}], env={"HOOK": f"{base}/ops"}
    )
    relay, store = public.app[RELAY], public.app[OWN_STORE]
    db = tmp_path / "relay.db"  # where make_relay keeps the store
    room = DiskSpace(db, 0).room()
    assert room is not None
    # min_free at three quarters of what is free now: not below it, but near.
    relay.disk = DiskSpace(db, int(room.free * 0.75))
    n = Notifications(relay, store)
    await n.round()
    await settle(n)
    await n.close()
    assert [b["condition"] for _, b in got.got] == ["disk_near"]
