"""Slow, oversized and malformed requests over raw sockets."""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import aiohttp

from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.base import EventFilter
from tests.integration.conftest import Backend, RelayFactory


def route(upstream: Backend, **extra: Any) -> dict[str, Any]:
    return {"name": "orders", "path": "/hook", "upstream": upstream.url("/orders"), **extra}


async def _open(client: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection("127.0.0.1", client.server.port)


async def _closed_by_peer(reader: asyncio.StreamReader, within: float) -> bool:
    """True once the relay closes the connection (EOF or reset), False past ``within``."""
    try:
        async with asyncio.timeout(within):
            while await reader.read(1024):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


async def test_slowloris_connections_are_cut_and_do_not_block_others(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(
        route(upstream), limits={"header_timeout": "500ms", "max_connections": 100}
    )
    trickles = [await _open(client) for _ in range(60)]
    for _, writer in trickles:
        writer.write(b"POST /hook HTTP/1.1\r\nHost: relay\r\nX-Slow: ")
        await writer.drain()

    async def trickle() -> None:
        # One byte now and then, never finishing the head.
        for _ in range(40):
            for _, writer in trickles:
                if not writer.is_closing():
                    with contextlib.suppress(ConnectionError):
                        writer.write(b"a")
            await asyncio.sleep(0.05)

    dripping = asyncio.create_task(trickle())
    # Normal senders are served while 60 connections dribble.
    for i in range(20):
        r = await client.post("/hook", data=b"{}", headers={"Idempotency-Key": f"k{i}"})
        assert r.status == 202
    # Every slow connection is closed soon after the header deadline.
    closed = await asyncio.gather(*(_closed_by_peer(r, within=3.0) for r, _ in trickles))
    dripping.cancel()
    # Our ends stay half-open after the relay's EOF until closed here: else the
    # garbage collector finds them later, in another test (a ResourceWarning).
    for _, writer in trickles:
        writer.close()
    assert all(closed)
    refused = client.app[RELAY].metrics.rejected.labels("", "header_timeout")._value.get()
    assert refused >= 60


async def test_connections_over_the_cap_are_refused_then_served_again(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(
        route(upstream), limits={"header_timeout": "1s", "max_connections": 5}
    )
    idle = [await _open(client) for _ in range(5)]
    reader, writer = await _open(client)
    assert await _closed_by_peer(reader, within=2.0)  # the sixth is dropped at once
    writer.close()
    for _, w in idle:
        w.close()
    # With the idle ones gone, requests go through again.
    async with asyncio.timeout(5):
        while True:
            try:
                r = await client.post("/hook", data=b"{}", headers={"Idempotency-Key": "ok"})
            except (OSError, aiohttp.ClientError):
                # The relay may not have seen the idle ones close yet.
                await asyncio.sleep(0.05)
                continue
            if r.status == 202:
                break
    assert client.app[RELAY].metrics.rejected.labels("", "max_connections")._value.get() >= 1


async def _raw(client: Any, data: bytes, within: float = 5.0) -> bytes:
    reader, writer = await _open(client)
    writer.write(data)
    await writer.drain()
    try:
        async with asyncio.timeout(within):
            return await reader.read(65536)
    finally:
        writer.close()


async def test_body_that_stalls_gets_408(upstream: Backend, make_relay: RelayFactory) -> None:
    client = await make_relay(route(upstream), limits={"body_timeout": "300ms"})
    answer = await _raw(
        client, b"POST /hook HTTP/1.1\r\nHost: r\r\nContent-Length: 100\r\n\r\n0123456789"
    )
    assert answer.startswith(b"HTTP/1.1 408")
    assert b"body_timeout" in answer
    assert upstream.seen == []


async def test_chunked_body_over_the_limit_gets_413_while_streaming(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(route(upstream), limits={"max_body": "1KiB"})
    chunk = b"x" * 600
    head = b"POST /hook HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\n"
    body = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(3)) + b"0\r\n\r\n"
    answer = await _raw(client, head + body)
    assert answer.startswith(b"HTTP/1.1 413")
    declared = await _raw(
        client, b"POST /hook HTTP/1.1\r\nHost: r\r\nContent-Length: 999999999\r\n\r\n"
    )
    assert declared.startswith(b"HTTP/1.1 413")  # refused on the header, body never read
    assert upstream.seen == []


async def test_a_header_block_over_the_bound_gets_431_and_is_not_kept(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(route(upstream))  # the default bound: 64 KiB
    big = {f"X-Pad-{i}": "v" * 8000 for i in range(100)}  # 800 KB of headers
    refused = await client.post("/hook", data=b"{}", headers={"Idempotency-Key": "k1", **big})
    assert refused.status == 431
    assert (await refused.json())["error"] == "headers_too_large"
    # Just under the bound: accepted, stored and forwarded as usual.
    some = {f"X-Pad-{i}": "v" * 8000 for i in range(7)}
    ok = await client.post("/hook", data=b"{}", headers={"Idempotency-Key": "k2", **some})
    assert ok.status == 202
    await upstream.wait_for(1)
    assert [s.key for s in upstream.seen] == ["k2"]
    relay = client.app[RELAY]
    assert relay.metrics.rejected.labels("orders", "headers_too_large")._value.get() == 1
    stored = await client.app[OWN_STORE].list_events(EventFilter(route="orders"), limit=10)
    assert [e.key for e in stored] == ["k2"]


async def test_header_values_that_are_not_text_are_not_forwarded(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(route(upstream))
    request = (
        b"POST /hook HTTP/1.1\r\nHost: r\r\nIdempotency-Key: k\xff\xfe\r\n"
        b"X-Bad: \xc3\x28\r\nX-Good: caf\xc3\xa9\r\nContent-Length: 2\r\n\r\n{}"
    )
    answer = await _raw(client, request)
    assert answer.startswith(b"HTTP/1.1 202")
    await upstream.wait_for(1)
    (seen,) = upstream.seen
    names = {k.lower(): v for k, v in seen.headers}
    assert "x-bad" not in names
    assert names["x-good"] == "café"
    # A key that is not valid text is hashed, never stored or sent raw.
    assert seen.key is not None and seen.key.startswith("sha256:")


async def test_malformed_http_never_gets_a_500(upstream: Backend, make_relay: RelayFactory) -> None:
    client = await make_relay(route(upstream))
    cases = [
        b"GARBAGE\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: r\r\nContent-Length: abc\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: r\r\n" + b"X-H: v\r\n" * 500 + b"\r\n",
        b"POST /hook HTTP/1.1\r\nHost: r\r\nX-Big: " + b"v" * 20000 + b"\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: r\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
        b"POST /%ff%fe HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n",
        b"POST /hook HTTP/1.1\r\nHost: r\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]
    for case in cases:
        answer = await _raw(client, case)
        status = answer.split(b" ", 2)[1] if answer.startswith(b"HTTP/1.") else b""
        assert status and not status.startswith(b"5"), (case[:60], answer[:120])
        assert b"Traceback" not in answer
    ok = await client.post("/hook", data=b"{}", headers={"Idempotency-Key": "after"})
    assert ok.status == 202
