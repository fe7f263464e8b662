"""Sync (pass-through) mode over real sockets and a real SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from yarl import URL

from relay.intake.listener import IN_FLIGHT
from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import Acquired, EventFilter, NewEvent
from tests.integration.conftest import Backend, RelayFactory, route


def sync_route(upstream: Backend, **extra: Any) -> dict[str, Any]:
    return {**route(upstream, "pay", path="/webhooks/pay", mode="sync"), **extra}


async def test_storm_of_200_identical_requests_reaches_upstream_once(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request, _n: int) -> web.StreamResponse:
        await release.wait()  # hold the original until every duplicate has arrived
        return web.json_response({"charged": True}, status=201)

    upstream.behaviour = slow
    client = await make_relay(sync_route(upstream))
    headers = {"Idempotency-Key": "charge-1"}

    # 200 connections at once: the default client pool would queue all but 100.
    sender = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
    url = client.make_url("/webhooks/pay")

    async def send() -> tuple[int, bytes, bool]:
        async with sender.post(url, data=b'{"amount":100}', headers=headers) as r:
            return r.status, await r.read(), r.headers.get("Idempotent-Replayed") == "true"

    tasks = [asyncio.create_task(send()) for _ in range(200)]
    await upstream.wait_for(1)
    # Hold the original until all 199 duplicates have hit the store's claim (each is
    # counted on the event row), so every one of them arrives while it is in flight.
    (event,) = await client.app[OWN_STORE].list_events(EventFilter(route="pay"), limit=1)
    async with asyncio.timeout(10):
        while (
            info := await client.app[OWN_STORE].get_event(event.id)
        ) is None or info.duplicates < 199:
            await asyncio.sleep(0.01)
    assert ("pay", "charge-1") in client.app[IN_FLIGHT].sync
    release.set()
    results = await asyncio.gather(*tasks)
    await sender.close()
    assert len(upstream.seen) == 1
    statuses = {status for status, _, _ in results}
    bodies = {body for _, body, _ in results}
    assert statuses == {201}
    assert bodies == {b'{"charged": true}'}
    assert sum(replayed for _, _, replayed in results) == 199


async def test_final_answer_is_replayed_to_later_duplicates(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def bad_request(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=422, text="no such customer", content_type="text/plain")

    upstream.behaviour = bad_request
    client = await make_relay(sync_route(upstream))
    first = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    again = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert (first.status, await first.text()) == (422, "no such customer")
    assert (again.status, await again.text()) == (422, "no such customer")
    assert "Idempotent-Replayed" not in first.headers
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"].startswith("text/plain")
    assert len(upstream.seen) == 1


async def test_upstream_failure_releases_the_claim_so_the_retry_goes_through(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def flaky(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=503 if n == 1 else 200, text=f"attempt {n}")

    upstream.behaviour = flaky
    client = await make_relay(sync_route(upstream))
    first = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert first.status == 503
    retry = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert retry.status == 200
    assert await retry.text() == "attempt 2"
    assert "Idempotent-Replayed" not in retry.headers
    replay = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert (replay.status, await replay.text()) == (200, "attempt 2")
    assert len(upstream.seen) == 2


async def test_retryable_statuses_release_the_claim(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    codes = [408, 425, 429, 500, 502]

    async def answer(_request: web.Request, n: int) -> web.StreamResponse:
        return web.Response(status=codes[n - 1] if n <= len(codes) else 204)

    upstream.behaviour = answer
    client = await make_relay(sync_route(upstream))
    got = []
    for _ in range(len(codes) + 2):
        r = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
        got.append(r.status)
    assert got == [*codes, 204, 204]
    assert len(upstream.seen) == len(codes) + 1


async def test_connection_error_is_502_and_timeout_is_504(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    async def hang(_request: web.Request, _n: int) -> web.StreamResponse:
        await asyncio.sleep(30)
        return web.Response()

    upstream.behaviour = hang
    dead = {"name": "dead", "path": "/dead", "mode": "sync", "upstream": "http://127.0.0.1:9/x"}
    client = await make_relay(
        sync_route(upstream, timeout={"total": "300ms", "connect": "200ms"}), dead
    )
    timed_out = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "t"})
    assert timed_out.status == 504
    assert (await timed_out.json())["error"] == "upstream_timeout"
    refused = await client.post("/dead", data=b"x", headers={"Idempotency-Key": "r"})
    assert refused.status == 502
    assert (await refused.json())["error"] == "upstream_unreachable"
    # Both claims were released: a retry is forwarded again, not replayed.
    again = await client.post("/dead", data=b"x", headers={"Idempotency-Key": "r"})
    assert again.status == 502
    assert "Idempotent-Replayed" not in again.headers


async def test_duplicate_past_the_wait_bound_gets_409_with_retry_after(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    release = asyncio.Event()

    async def slow(_request: web.Request, _n: int) -> web.StreamResponse:
        await release.wait()
        return web.Response(status=200, text="done")

    upstream.behaviour = slow
    client = await make_relay(
        sync_route(upstream, sync={"wait": "200ms", "busy_retry_after": "7s"})
    )
    first = asyncio.create_task(
        client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    )
    await upstream.wait_for(1)
    dup = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert dup.status == 409
    assert dup.headers["Retry-After"] == "7"
    release.set()
    assert (await first).status == 200
    later = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert (later.status, later.headers["Idempotent-Replayed"]) == (200, "true")
    assert len(upstream.seen) == 1


async def test_expired_lease_of_a_dead_holder_is_taken_over(
    upstream: Backend, make_relay: RelayFactory, now_clock: Any
) -> None:
    client = await make_relay(sync_route(upstream, sync={"wait": "300ms", "lease": "5s"}))
    store = client.app[OWN_STORE]
    # Another process claimed the key and died without answering.
    ghost = NewEvent(
        route="pay",
        key="k",
        key_source="header:Idempotency-Key",
        fingerprint="0" * 64,
        method="POST",
        path="/webhooks/pay",
        query="",
        headers=(),
        body=b"x",
        received_at=now_clock(),
    )
    held = await store.claim_sync(ghost, 5.0)
    assert isinstance(held, Acquired)
    busy = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert busy.status == 409
    assert upstream.seen == []
    now_clock.advance(6)
    taken = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert taken.status == 200
    assert len(upstream.seen) == 1
    # The dead holder's late answer is fenced off.
    from relay.store.base import StoredResponse

    assert not await store.complete_sync(held.event_id, held.token, StoredResponse(500, None, b""))
    replay = await client.post("/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"})
    assert replay.status == 200 and replay.headers["Idempotent-Replayed"] == "true"


async def test_same_key_other_body_is_counted_or_rejected(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(
        sync_route(upstream),
        sync_route(
            upstream, name="strict", path="/strict", idempotency={"on_payload_mismatch": "reject"}
        ),
    )
    metrics = client.app[RELAY].metrics
    for path in ("/webhooks/pay", "/strict"):
        assert (
            await client.post(path, data=b"one", headers={"Idempotency-Key": "k"})
        ).status == 200
    lenient = await client.post("/webhooks/pay", data=b"two", headers={"Idempotency-Key": "k"})
    assert lenient.status == 200 and lenient.headers["Idempotent-Replayed"] == "true"
    strict = await client.post("/strict", data=b"two", headers={"Idempotency-Key": "k"})
    assert strict.status == 422
    assert (await strict.json())["error"] == "payload_mismatch"
    assert metrics.mismatches.labels("pay")._value.get() == 1
    assert metrics.mismatches.labels("strict")._value.get() == 1
    assert len(upstream.seen) == 2


async def test_upstream_request_headers_and_exact_bytes(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(sync_route(upstream, idempotency={"header": "X-Relay-Key"}))
    body = os.urandom(4096) + b"\r\n\x00\xff{not json"
    sent_headers = {
        "Idempotency-Key": "evt_42",
        "Content-Type": "application/octet-stream",
        "X-Custom": "kept",
        "X-Forwarded-For": "203.0.113.9",
        "Keep-Alive": "timeout=5",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "TE": "trailers",
        "Upgrade": "h2c",
        "Connection": "X-Hop, Upgrade",
        "X-Hop": "dropped",
        "Trailer": "X-Foo",
        "User-Agent": "Stripe/1.0 (+https://stripe.com/docs/webhooks)",
    }
    r = await client.post("/webhooks/pay?a=1&b=two", data=body, headers=sent_headers)
    assert r.status == 200
    (seen,) = upstream.seen
    assert seen.body == body
    assert seen.path_qs == "/pay?a=1&b=two"
    names = {k.lower() for k, _ in seen.headers}
    for hop in ("keep-alive", "proxy-authorization", "te", "upgrade", "x-hop", "trailer"):
        assert hop not in names, hop
    h = {k.lower(): v for k, v in seen.headers}
    assert h["x-custom"] == "kept"
    assert h["content-type"] == "application/octet-stream"
    assert h["x-forwarded-for"] == "127.0.0.1"  # a stranger's claim replaced
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"].startswith("127.0.0.1:")
    assert h["x-relay-key"] == "evt_42"
    assert h["host"] == f"127.0.0.1:{upstream.server.port}"  # type: ignore[union-attr]
    # The sender's User-Agent passes unchanged; the relay's client adds none of its own.
    assert [v for k, v in seen.headers if k.lower() == "user-agent"] == [
        "Stripe/1.0 (+https://stripe.com/docs/webhooks)"
    ]


FORGED = {
    "X-Forwarded-For": "10.9.9.9",
    "X-Forwarded-Proto": "https",
    "X-Forwarded-Host": "admin.internal",
    "Forwarded": "for=10.9.9.9;proto=https;host=admin.internal",
    "X-Real-IP": "10.9.9.9",
}


@pytest.mark.parametrize("mode", ["sync", "queue"])
async def test_a_strangers_forwarding_headers_are_replaced(
    upstream: Backend, make_relay: RelayFactory, mode: str
) -> None:
    client = await make_relay(sync_route(upstream, mode=mode))
    r = await client.post("/webhooks/pay", data=b"{}", headers={**FORGED, "Idempotency-Key": "a"})
    assert r.status in (200, 202)
    await upstream.wait_for(1)
    h = {k.lower(): v for k, v in upstream.seen[-1].headers}
    assert h["x-forwarded-for"] == "127.0.0.1" and h["x-real-ip"] == "127.0.0.1"
    assert h["x-forwarded-proto"] == "http"
    assert h["x-forwarded-host"].startswith("127.0.0.1:")
    assert h["forwarded"].startswith("for=127.0.0.1;proto=http;host=")
    assert "admin.internal" not in str(h) and "10.9.9.9" not in str(h)


@pytest.mark.parametrize("mode", ["sync", "queue"])
async def test_a_trusted_proxys_forwarding_headers_are_kept_and_extended(
    upstream: Backend, make_relay: RelayFactory, mode: str
) -> None:
    client = await make_relay(sync_route(upstream, mode=mode), trusted_proxies=["127.0.0.0/8"])
    r = await client.post("/webhooks/pay", data=b"{}", headers={**FORGED, "Idempotency-Key": "b"})
    assert r.status in (200, 202)
    await upstream.wait_for(1)
    h = {k.lower(): v for k, v in upstream.seen[-1].headers}
    assert h["x-forwarded-for"] == "10.9.9.9, 127.0.0.1" and h["x-real-ip"] == "10.9.9.9"
    assert h["x-forwarded-proto"] == "https" and h["x-forwarded-host"] == "admin.internal"
    assert h["forwarded"].startswith("for=10.9.9.9;proto=https;host=admin.internal, for=127.0.0.1")


async def test_redirects_are_not_followed(upstream: Backend, make_relay: RelayFactory) -> None:
    async def redirect(_request: web.Request, _n: int) -> web.StreamResponse:
        return web.Response(status=302, headers={"Location": "/elsewhere"})

    upstream.behaviour = redirect
    client = await make_relay(sync_route(upstream))
    r = await client.post(
        "/webhooks/pay", data=b"x", headers={"Idempotency-Key": "k"}, allow_redirects=False
    )
    assert r.status == 302
    assert [s.path_qs for s in upstream.seen] == ["/pay"]


def lenient_and_strict(upstream: Backend, lenient: str, strict: str) -> list[dict[str, Any]]:
    """/webhooks/pay keyed on ``lenient`` (else the body's hash); /strict requires ``strict``."""
    return [
        sync_route(upstream, idempotency={"key": [lenient]}),
        sync_route(
            upstream,
            name="strict",
            path="/strict",
            idempotency={"key": [strict], "require_key": True},
        ),
    ]


async def test_key_sources_fall_back_and_require_key(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(*lenient_and_strict(upstream, "json:$.data.id", "header:X-Event-Id"))
    # A body without the field (and one that is not JSON) falls back to the body's SHA-256.
    for body in (b'{"data": {}}', b"not json", b"not json"):
        await client.post("/webhooks/pay", data=body)
    assert len(upstream.seen) == 2
    json_keyed = json.dumps({"data": {"id": "obj_1"}}).encode()
    await client.post("/webhooks/pay", data=json_keyed)
    assert upstream.seen[-1].key == "obj_1"
    missing = await client.post("/strict", data=b"x")
    assert missing.status == 400
    assert (await missing.json())["error"] == "missing_key"
    ok = await client.post("/strict", data=b"x", headers={"X-Event-Id": "e1"})
    assert ok.status == 200
    assert upstream.seen[-1].key == "e1"


async def test_numeric_ids_past_the_float_range_stay_different_events(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(*lenient_and_strict(upstream, "json:$.id", "json:$.id"))
    # As floats both are inf: one would be swallowed as the other's duplicate.
    for body in (b'{"id": 1e999999}', b'{"id": 2e999999}', b'{"id": 2e999999}'):
        assert (await client.post("/webhooks/pay", data=body)).status == 200
    assert [s.key for s in upstream.seen] == ["1e999999", "2e999999"]
    for body in (b'{"id": NaN}', b'{"id": Infinity}', b'{"id": -Infinity}'):
        refused = await client.post("/strict", data=body)
        assert refused.status == 400
        answer = await refused.json()
        assert answer["error"] == "missing_key" and "NaN/Infinity" in answer["message"]
    assert len(upstream.seen) == 2


async def test_keys_are_scoped_per_route(upstream: Backend, make_relay: RelayFactory) -> None:
    client = await make_relay(sync_route(upstream), sync_route(upstream, name="b", path="/b"))
    for path in ("/webhooks/pay", "/b", "/webhooks/pay", "/b"):
        await client.post(
            path, data=b"x", headers={"X-GitHub-Delivery": "g1", "Idempotency-Key": "g1"}
        )
    assert len(upstream.seen) == 2


async def test_unknown_path_wrong_method_and_oversized_body(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(sync_route(upstream), limits={"max_body": "1KiB"})
    assert (await client.post("/nope", data=b"x")).status == 404
    wrong = await client.get("/webhooks/pay")
    assert wrong.status == 405
    assert wrong.headers["Allow"] == "POST"
    big = await client.post("/webhooks/pay", data=b"x" * 2048)
    assert big.status == 413
    assert (await big.json())["error"] == "body_too_large"
    assert upstream.seen == []


async def test_query_string_is_forwarded_as_received(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(sync_route(upstream))
    raw = "a=%00b&c=d+e&f=%2F&g=%C3%A9"
    url = URL(str(client.make_url("/webhooks/pay")) + f"?{raw}", encoded=True)
    r = await client.session.post(url, data=b"x", headers={"Idempotency-Key": "q"})
    assert r.status == 200
    assert upstream.seen[0].path_qs == f"/pay?{raw}"
