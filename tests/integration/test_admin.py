"""The admin listener over a real socket: token, probes, events API, replay, purge, reload."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.admin.door import THROTTLE
from relay.admin.throttle import FREE_FAILURES
from relay.runtime import RELAY
from relay.sdnotify import Notifier
from relay.serve import OWN_STORE, reload_app
from tests.integration.conftest import AdminFactory, Backend, RelayFactory, eventually, route

Client = TestClient[web.Request, web.Application]
TOKEN = "s3cret-admin-token-0123456789"
WAIT = 10.0


async def send(
    client: Client, key: str, body: bytes = b"{}", name: str = "orders", **headers: str
) -> int:
    resp = await client.post(
        f"/hooks/{name}", data=body, headers={"Idempotency-Key": key, **headers}
    )
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["event_id"])


async def state_of(admin: Client, event_id: int, **auth: str) -> str:
    resp = await admin.get(f"/api/v1/events/{event_id}", headers=auth)
    return str((await resp.json())["state"])


async def wait_state(admin: Client, event_id: int, state: str) -> None:
    async def ok() -> bool:
        return await state_of(admin, event_id) == state

    await eventually(ok, f"event {event_id} to be {state}")


def gone_for(keys: set[str]) -> Callable[[web.Request, int], Awaitable[web.StreamResponse]]:
    """A backend answering 410 (final: dead) for these keys, 200 otherwise."""

    async def behaviour(request: web.Request, n: int) -> web.StreamResponse:
        status = 410 if request.headers.get("Idempotency-Key") in keys else 200
        return web.json_response({"n": n}, status=status)

    return behaviour


# --- the token --------------------------------------------------------------------


async def test_probes_are_open_and_everything_else_needs_the_bearer_token(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    public = await make_relay(
        route(upstream), admin={"token_env": "ADMIN_T"}, env={"ADMIN_T": TOKEN}
    )
    admin = await make_admin(public)
    # Every wrong form on every path, without the lockout that guesses earn (tested below).
    admin.app[THROTTLE].free = 1000
    for probe in ("/healthz", "/readyz"):
        assert (await admin.get(probe)).status == 200
    wrong = [
        {},
        {"Authorization": "Bearer nope"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": f"Bearer {TOKEN[:-1]}"},
        {"Authorization": f"Bearer {TOKEN}x"},
        {"Authorization": TOKEN},
    ]
    for path in ("/metrics", "/api/v1/events", "/api/v1/status", "/api/v1/nothing-here"):
        for headers in wrong:
            resp = await admin.get(path, headers=headers)
            assert resp.status == 401, (path, headers)
            assert resp.headers["WWW-Authenticate"].startswith("Bearer")
            assert (await resp.json())["error"] == "unauthorized"
    resp = await admin.post("/api/v1/purge", json={"all": True, "reason": "test"})
    assert resp.status == 401
    good = {"Authorization": f"Bearer {TOKEN}"}
    assert (await admin.get("/metrics", headers=good)).status == 200
    assert (await admin.get("/api/v1/events", headers=good)).status == 200
    lower = {"Authorization": f"bearer {TOKEN}"}  # the scheme is case-insensitive
    assert (await admin.get("/api/v1/status", headers=lower)).status == 200
    missing = await admin.get("/api/v1/nothing-here", headers=good)
    assert missing.status == 404
    assert (await missing.json())["error"] == "not_found"


async def test_token_guesses_are_slowed_down_per_client(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    public = await make_relay(
        route(upstream), admin={"token_env": "ADMIN_T"}, env={"ADMIN_T": TOKEN}
    )
    admin = await make_admin(public)
    good = {"Authorization": f"Bearer {TOKEN}"}
    # A scraper without any token is misconfigured, not guessing: never locked out.
    for _ in range(10):
        assert (await admin.get("/metrics")).status == 401
    for i in range(FREE_FAILURES):
        resp = await admin.get("/api/v1/status", headers={"Authorization": f"Bearer guess{i}"})
        assert resp.status == 401
    # The next wrong one locks this client out: even the right token waits.
    assert (await admin.get("/api/v1/status", headers={"Authorization": "Bearer x"})).status == 401
    locked = await admin.get("/api/v1/status", headers=good)
    assert locked.status == 429 and int(locked.headers["Retry-After"]) >= 1
    assert (await locked.json())["error"] == "throttled"

    async def let_in() -> bool:
        return (await admin.get("/api/v1/status", headers=good)).status == 200

    await eventually(let_in, "the lockout to end")
    metrics = await (await admin.get("/metrics", headers=good)).text()
    assert 'relay_admin_refused_total{reason="throttled"}' in metrics
    assert 'relay_admin_refused_total{reason="throttled"} 0.0' not in metrics


async def test_a_read_token_reads_and_an_operate_token_acts(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    viewer, ops = "v" * 40, "o" * 40
    public = await make_relay(
        route(upstream),
        admin={
            "tokens": [
                {"label": "grafana", "role": "read", "token_env": "T_READ"},
                {"label": "oncall", "role": "operate", "token_env": "T_OPS"},
            ]
        },
        env={"T_READ": viewer, "T_OPS": ops},
    )
    admin = await make_admin(public)
    as_viewer = {"Authorization": f"Bearer {viewer}"}
    as_ops = {"Authorization": f"Bearer {ops}"}
    assert (await admin.get("/api/v1/status", headers=as_viewer)).status == 200
    assert (await admin.get("/metrics", headers=as_viewer)).status == 200
    body = {"route": "orders", "reason": "deploy"}
    refused = await admin.post("/api/v1/routes/orders/pause", json=body, headers=as_viewer)
    assert refused.status == 403 and (await refused.json())["error"] == "role"
    done = await admin.post(
        "/api/v1/routes/orders/pause", json={"reason": "deploy"}, headers=as_ops
    )
    assert done.status == 200, await done.text()
    entries = (await (await admin.get("/api/v1/audit", headers=as_viewer)).json())["entries"]
    # The audit log names the token by its label, never by its value.
    assert [e["credential"] for e in entries] == ["oncall"]
    assert ops not in json.dumps(entries)


async def test_without_a_token_configured_the_loopback_api_is_open(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    admin = await make_admin(await make_relay(route(upstream)))
    assert (await admin.get("/api/v1/events")).status == 200
    assert (await admin.get("/metrics")).status == 200


async def test_readyz_says_draining_and_store_unavailable(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    relay = public.app[RELAY]
    ready = await admin.get("/readyz")
    assert (ready.status, (await ready.json())["status"]) == (200, "ready")
    relay.draining = True
    draining = await admin.get("/readyz")
    assert (draining.status, (await draining.json())["status"]) == (503, "draining")
    assert (await admin.get("/healthz")).status == 200  # alive while draining
    relay.draining = False
    await relay.store.close()
    closed = await admin.get("/readyz")
    assert (closed.status, (await closed.json())["status"]) == (503, "store_unavailable")
    # The API answers the store's failure as JSON, never as a traceback.
    resp = await admin.get("/api/v1/events")
    assert resp.status == 503
    doc = await resp.json()
    assert doc["error"] == "store_unavailable"
    assert "Traceback" not in doc["message"]
    # A scrape still answers: the gauges keep their last values.
    assert (await admin.get("/metrics")).status == 200


# --- listing ------------------------------------------------------------------------


async def test_list_filters_and_pages_with_a_cursor(
    upstream: Backend,
    make_relay: RelayFactory,
    make_admin: AdminFactory,
    now_clock: Any,
) -> None:
    upstream.behaviour = gone_for({"a-dead-1", "a-dead-2"})
    public = await make_relay(route(upstream, "a"), route(upstream, "b"))
    admin = await make_admin(public)
    early = [await send(public, f"a-{i}", name="a") for i in range(3)]
    b_id = await send(public, "b-0", name="b")
    mid = public.app[OWN_STORE].clock()
    now_clock.advance(100)
    late = [await send(public, f"a-{i}", name="a") for i in range(3, 5)]
    dead = [await send(public, f"a-dead-{i}", name="a") for i in (1, 2)]
    for i in dead:
        await wait_state(admin, i, "dead")
    a_ids = sorted([*early, *late, *dead], reverse=True)

    # Every page of three, following "next" as given, newest first, nothing twice.
    seen: list[int] = []
    url: str | None = "/api/v1/events?route=a&limit=3"
    pages = 0
    while url is not None:
        resp = await admin.get(url)
        assert resp.status == 200
        doc = await resp.json()
        assert len(doc["events"]) <= 3
        seen += [e["id"] for e in doc["events"]]
        url = doc["next"]
        if url is not None:
            assert "route=a" in url and f"before_id={seen[-1]}" in url
            assert doc["next_before_id"] == seen[-1]
        pages += 1
        assert pages <= 5
    assert seen == a_ids
    assert pages == 3  # 7 events: 3 + 3 + 1, and no empty last page

    async def ids(query: str) -> list[int]:
        resp = await admin.get(f"/api/v1/events?{query}")
        assert resp.status == 200, await resp.text()
        return [e["id"] for e in (await resp.json())["events"]]

    assert await ids("state=dead") == sorted(dead, reverse=True)
    assert await ids("route=b") == [b_id]
    assert await ids("key=a-1") == [early[1]]
    assert await ids(f"route=a&until={mid}") == sorted(early, reverse=True)
    assert await ids(f"route=a&since={mid}") == sorted([*late, *dead], reverse=True)
    assert await ids("route=a&since=50s") == sorted([*late, *dead], reverse=True)
    assert await ids("route=nope") == []
    assert await ids(f"route=a&before_id={early[1]}") == [early[0]]


# --- one event ------------------------------------------------------------------------


async def test_show_redacts_secrets_and_explains_the_dedupe(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    secret = "whsec-route-secret"
    public = await make_relay(
        route(upstream),
        route(
            upstream,
            "signed",
            verify={"scheme": "hmac-sha256", "header": "X-Custom-Mac", "secret_env": "ROUTE_S"},
        ),
        env={"ROUTE_S": secret},
    )
    admin = await make_admin(public)
    body = json.dumps({"id": "evt_1", "text": "héllo"}).encode()
    mac = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    leaks = {
        "Authorization": "Bearer sender-credential-1",
        "Stripe-Signature": "t=1,v1=stripe-sig-value",
        "X-Hub-Signature-256": "sha256=github-sig-value",
        "Cookie": "session=cookie-value",
        "X-Api-Key": "api-key-value",
        "X-Webhook-Token": "webhook-token-value",
        "X-Custom-Mac": mac,
    }
    resp = await public.post(
        "/hooks/signed?token=query-secret-value&page=2",
        data=body,
        headers={"Idempotency-Key": "k-1", "X-Plain": "visible", **leaks},
    )
    assert resp.status == 202, await resp.text()
    event_id = (await resp.json())["event_id"]
    # Two duplicates; the second with another body (a payload mismatch).
    for again in (body, b'{"id": "evt_1", "changed": true}'):
        r = await public.post(
            "/hooks/signed",
            data=again,
            headers={
                "Idempotency-Key": "k-1",
                "X-Custom-Mac": hmac.new(secret.encode(), again, hashlib.sha256).hexdigest(),
            },
        )
        assert r.status == 202 and r.headers["Idempotent-Replayed"] == "true"
    await upstream.wait_for(1)
    await wait_state(admin, event_id, "delivered")

    resp = await admin.get(f"/api/v1/events/{event_id}")
    assert resp.status == 200
    raw = await resp.text()
    for value in [*leaks.values(), "query-secret-value", secret]:
        assert value not in raw, f"{value!r} leaked"
    doc = json.loads(raw)
    headers = {k.lower(): v for k, v in doc["headers"]}
    for name in leaks:
        assert headers[name.lower()] == "[redacted]", name
    assert headers["x-plain"] == "visible"
    assert headers["idempotency-key"] == "k-1"
    assert doc["query"] == "token=[redacted]&page=2"
    assert base64.b64decode(doc["body"]["base64"]) == body
    assert doc["body"]["preview"] == body.decode()
    assert doc["body"]["size"] == len(body)
    assert (doc["duplicates"], doc["mismatches"]) == (2, 1)
    dedupe = doc["dedupe"]
    assert dedupe["key"] == "k-1" and dedupe["key_source"] == "header:Idempotency-Key"
    assert dedupe["fingerprint"] == hashlib.sha256(body).hexdigest()
    assert "2 later request(s)" in dedupe["explanation"]
    assert "1 of them had a different body" in dedupe["explanation"]
    assert [d["state"] for d in doc["deliveries"]] == ["delivered"]
    assert [a["status"] for a in doc["attempts"]] == [200]

    # A body that is not UTF-8: base64 only, no preview.
    binary = bytes(range(256))
    bin_id = await send(public, "bin", binary)
    doc = await (await admin.get(f"/api/v1/events/{bin_id}")).json()
    assert base64.b64decode(doc["body"]["base64"]) == binary
    assert doc["body"]["preview"] is None


async def test_errors_are_json_with_400_404_405(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    admin = await make_admin(await make_relay(route(upstream)))
    cases: list[tuple[str, str, Any, int, str]] = [
        ("GET", "/api/v1/events/abc", None, 400, "bad_id"),
        ("GET", "/api/v1/events/-1", None, 400, "bad_id"),
        ("GET", "/api/v1/events/999", None, 404, "not_found"),
        ("POST", "/api/v1/events/999/replay", None, 404, "not_found"),
        ("POST", "/api/v1/events/1/replay?force=maybe", None, 400, "bad_request"),
        ("POST", "/api/v1/events/1/replay?forse=1", None, 400, "unknown_parameter"),
        ("GET", "/api/v1/events?state=gone", None, 400, "bad_filter"),
        ("GET", "/api/v1/events?limit=0", None, 400, "bad_request"),
        ("GET", "/api/v1/events?limit=100000", None, 400, "bad_request"),
        ("GET", "/api/v1/events?before_id=x", None, 400, "bad_request"),
        ("GET", "/api/v1/events?since=yesterday", None, 400, "bad_filter"),
        ("GET", "/api/v1/events?since=nan", None, 400, "bad_filter"),
        ("GET", "/api/v1/events?rout=a", None, 400, "unknown_parameter"),
        ("POST", "/api/v1/purge", b"[", 400, "bad_json"),
        ("POST", "/api/v1/purge", b"[1]", 400, "bad_json"),
        ("POST", "/api/v1/purge", b"{}", 400, "empty_filter"),
        ("POST", "/api/v1/purge", b"", 400, "empty_filter"),
        ("POST", "/api/v1/purge", b'{"rout": "a"}', 400, "unknown_field"),
        ("POST", "/api/v1/purge", b'{"all": "sure"}', 400, "bad_request"),
        ("POST", "/api/v1/replay", b'{"ids": "1"}', 400, "bad_filter"),
        ("POST", "/api/v1/replay", b'{"ids": [true]}', 400, "bad_request"),
        ("POST", "/api/v1/replay", b'{"route": 5}', 400, "bad_filter"),
        ("POST", "/api/v1/replay", b'{"state": "dead", "force": 2}', 400, "bad_request"),
        ("GET", "/api/v1/replay", None, 405, "method_not_allowed"),
        ("GET", "/nowhere", None, 404, "not_found"),
    ]
    for method, path, body, status, error in cases:
        json_type = {"Content-Type": "application/json"} if method == "POST" else {}
        resp = await admin.request(method, path, data=body, headers=json_type)
        assert resp.status == status, (method, path, body, await resp.text())
        assert resp.content_type == "application/json", (method, path)
        doc = await resp.json()
        assert doc["error"] == error, (method, path, body, doc)
        assert isinstance(doc["message"], str) and doc["message"]


# --- replay and purge ------------------------------------------------------------------


async def test_replay_of_a_dead_event_reaches_the_backend(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    failing = {"k-dead"}
    upstream.behaviour = gone_for(failing)
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    event_id = await send(public, "k-dead", b'{"n": 1}')
    await upstream.wait_for(1)
    await wait_state(admin, event_id, "dead")

    failing.clear()  # the backend is fixed
    resp = await admin.post(f"/api/v1/events/{event_id}/replay", json={})
    assert resp.status == 200
    doc = await resp.json()
    assert (doc["requeued"], doc["force"], doc["route_active"]) == (1, False, True)
    await upstream.wait_for(2)  # woken, not polled: well within the wait
    assert upstream.seen[1].body == b'{"n": 1}' and upstream.seen[1].key == "k-dead"
    await wait_state(admin, event_id, "delivered")
    detail = await (await admin.get(f"/api/v1/events/{event_id}")).json()
    assert [a["status"] for a in detail["attempts"]] == [410, 200]

    # Nothing dead any more: a plain replay does nothing and says why.
    doc = await (await admin.post(f"/api/v1/events/{event_id}/replay", json={})).json()
    assert doc["requeued"] == 0 and "force" in doc["message"]
    # force=1 forwards a delivered event again.
    doc = await (await admin.post(f"/api/v1/events/{event_id}/replay?force=1", json={})).json()
    assert (doc["requeued"], doc["force"]) == (1, True)
    await upstream.wait_for(3)
    await wait_state(admin, event_id, "delivered")
    assert len(upstream.seen) == 3


async def test_a_replay_of_an_event_whose_body_is_gone_answers_410(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    public = await make_relay(route(upstream))
    admin = await make_admin(public)
    event_id = await send(public, "k-old", b'{"n": 1}')
    await wait_state(admin, event_id, "delivered")
    store = public.app[OWN_STORE]
    assert await store.drop_payloads(store.clock() + 1, 10) == 1  # payload retention

    for path in (f"/api/v1/events/{event_id}/replay", f"/api/v1/events/{event_id}/replay?force=1"):
        resp = await admin.post(path, json={"reason": "customer asked"})
        assert resp.status == 410
        doc = await resp.json()
        assert doc["error"] == "payload_gone" and "storage.payload_retention" in doc["message"]
    # The event's metadata stays, and says the body is gone.
    detail = await (await admin.get(f"/api/v1/events/{event_id}")).json()
    assert detail["body"]["dropped"] is True and detail["key"] == "k-old"
    assert [a["status"] for a in detail["attempts"]] == [200]
    assert len(upstream.seen) == 1
    # Nothing was audited: nothing was done.
    audit = await (await admin.get("/api/v1/audit")).json()
    assert [e for e in audit["entries"] if e["action"] == "replay"] == []


async def test_bulk_replay_by_filter_touches_only_what_matches(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    failing = {"a1", "a2", "a3", "b1"}
    upstream.behaviour = gone_for(failing)
    public = await make_relay(route(upstream, "a"), route(upstream, "b"))
    admin = await make_admin(public)
    a_ids = [await send(public, k, name="a") for k in ("a1", "a2", "a3")]
    ok_id = await send(public, "a-ok", name="a")
    b_id = await send(public, "b1", name="b")
    for i in (*a_ids, b_id):
        await wait_state(admin, i, "dead")
    await wait_state(admin, ok_id, "delivered")
    assert len(upstream.seen) == 5

    failing.clear()
    resp = await admin.post(
        "/api/v1/replay", json={"route": "a", "state": "dead", "reason": "test"}
    )
    assert resp.status == 200
    assert await resp.json() == {"requeued": 3, "force": False}
    await upstream.wait_for(8)
    for i in a_ids:
        await wait_state(admin, i, "delivered")
    assert await state_of(admin, b_id) == "dead"  # another route: untouched
    assert await state_of(admin, ok_id) == "delivered"
    assert sorted(s.key or "" for s in upstream.seen[5:]) == ["a1", "a2", "a3"]
    assert len(upstream.seen) == 8


async def test_purge_by_filter_never_removes_pending_work(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory
) -> None:
    async def behaviour(request: web.Request, _n: int) -> web.StreamResponse:
        # Route "slow" is down for good (retried far in the future): its event stays pending.
        return web.Response(status=503 if request.path == "/slow" else 200)

    upstream.behaviour = behaviour
    public = await make_relay(
        route(upstream, "fast"),
        route(upstream, "slow", retry={"initial": "1h", "max": "1h"}),
    )
    admin = await make_admin(public)
    done = [await send(public, f"f{i}", name="fast") for i in range(3)]
    pending = await send(public, "s1", name="slow")
    for i in done:
        await wait_state(admin, i, "delivered")
    await upstream.wait_for(4)
    await wait_state(admin, pending, "pending")

    resp = await admin.post("/api/v1/purge", json={"route": "slow", "reason": "test"})
    assert await resp.json() == {"purged": 0}
    resp = await admin.post("/api/v1/purge", json={"ids": [done[0]], "reason": "test"})
    assert await resp.json() == {"purged": 1}
    assert (await admin.get(f"/api/v1/events/{done[0]}")).status == 404
    resp = await admin.post("/api/v1/purge", json={"all": True, "reason": "test"})
    assert await resp.json() == {"purged": 2}
    doc = await (await admin.get("/api/v1/events")).json()
    assert [e["id"] for e in doc["events"]] == [pending]


# --- reload ------------------------------------------------------------------------------


async def test_reload_keeps_a_removed_routes_events_pending_and_reports_them(
    upstream: Backend,
    make_relay: RelayFactory,
    make_admin: AdminFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    async def behaviour(request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=503 if request.path == "/old" else 200)

    upstream.behaviour = behaviour
    keep = route(upstream, "keep")
    old = route(upstream, "old", retry={"initial": "1h", "max": "1h"})
    public = await make_relay(keep, old)
    admin = await make_admin(public)
    stuck = [await send(public, f"o{i}", name="old") for i in range(2)]
    await upstream.wait_for(2)
    for i in stuck:
        await wait_state(admin, i, "pending")

    path = tmp_path / "reload.yaml"
    path.write_text(yaml.safe_dump({"routes": [keep, route(upstream, "new")]}), encoding="utf-8")
    reload_app(public.app, path, Notifier(""))

    # The new route serves at once; the removed one is gone from the listener.
    assert await send(public, "n1", name="new") > 0
    assert (await public.post("/hooks/old", data=b"{}")).status == 404

    async def orphans_reported() -> bool:
        doc = await (await admin.get("/readyz")).json()
        return doc.get("orphaned_deliveries") == 2

    await eventually(orphans_reported, "orphans on /readyz")
    status = await (await admin.get("/api/v1/status")).json()
    assert status["orphaned"] == [
        {"route": "old", "upstream": upstream.url("/old"), "deliveries": 2}
    ]
    assert [r["name"] for r in status["routes"]] == ["keep", "new"]
    assert status["last_reload"]["ok"] is True
    for i in stuck:
        assert await state_of(admin, i) == "pending"  # kept, not dropped
    assert "reload_orphaned_events" in capsys.readouterr().out

    # A bad file is refused: the routes stay, the status says why.
    path.write_text("routes:\n  - name: broken\n    path: nope\n", encoding="utf-8")
    reload_app(public.app, path, Notifier(""))
    assert await send(public, "n2", name="new") > 0
    status = await (await admin.get("/api/v1/status")).json()
    assert [r["name"] for r in status["routes"]] == ["keep", "new"]
    assert status["last_reload"]["ok"] is False and status["last_reload"]["errors"]
    metrics = await (await admin.get("/metrics")).text()
    assert "relay_config_last_reload_successful 0.0" in metrics
    assert 'relay_config_reloads_total{result="refused"} 1.0' in metrics
    assert 'relay_config_reloads_total{result="ok"} 1.0' in metrics


async def test_reload_applies_routes_and_names_what_needs_a_restart(
    upstream: Backend,
    make_relay: RelayFactory,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    a = route(upstream, "a")
    public = await make_relay(a, limits={"max_body": "1KiB"})
    relay = public.app[RELAY]
    path = tmp_path / "reload.yaml"
    doc = {"routes": [a, route(upstream, "b")], "limits": {"max_body": "64KiB"}}
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    reload_app(public.app, path, Notifier(""))
    assert await send(public, "b1", name="b") > 0  # the routes did reload
    # The body cap is aiohttp's, fixed at start: the old limit stays, whole and stated.
    assert relay.config.limits.max_body == 1024
    resp = await public.post("/hooks/a", data=b"x" * 4096, headers={"Idempotency-Key": "big"})
    assert resp.status == 413
    assert "1024" in (await resp.json())["message"]
    out = capsys.readouterr().out
    assert "reload_needs_restart" in out and "limits" in out
