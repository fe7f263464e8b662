"""A duplicate across a reload that changes its route's mode, with the daemon as a
process: the first copy is in flight in the old mode when the duplicate arrives in the
new one, and again once the first copy is settled. Never a 500: the first copy's stored
answer where there is one, otherwise the new mode's duplicate answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import sqlite3
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import Backend, deliveries_by_state, post, queue_route, wait_for

REPLAYED = "Idempotent-Replayed"
# Past the test's own waits: the sender of the first copy is still waiting on the
# backend when the duplicate comes (a hybrid wait stays under the senders' 10 s).
WAITS: dict[str, dict[str, Any]] = {"sync": {}, "hybrid": {"hybrid": {"wait": "9s"}}, "queue": {}}


def _route(backend: Backend, mode: str) -> dict[str, Any]:
    return queue_route(backend, mode=mode, **WAITS[mode])


def _duplicates(db: Path) -> int:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        row = conn.execute("SELECT duplicates FROM events WHERE key = 'k1'").fetchone()
    return 0 if row is None else int(row[0])


def _answered(status: int, body: bytes) -> bool:
    """The backend's own answer (its JSON names the key), not an ack of the relay's."""
    return status == 200 and json.loads(body).get("key") == "k1"


def _acked(status: int, headers: dict[str, str], body: bytes) -> bool:
    """The queue's duplicate ack."""
    return status == 202 and headers.get(REPLAYED) == "true" and b'"duplicate"' in body


@pytest.mark.parametrize(
    ("before", "after"),
    [("sync", "hybrid"), ("hybrid", "sync"), ("queue", "sync"), ("sync", "queue")],
    ids=lambda mode: str(mode),
)
async def test_a_duplicate_across_a_reload_that_changes_the_mode(
    relays: Any, start_backend: Any, before: str, after: str
) -> None:
    backend = Backend()
    backend.hold, backend.hold_first = asyncio.Event(), 1  # the first copy hangs
    await start_backend(backend)
    relay = relays([_route(backend, before)], shutdown_grace="2s")
    await relay.start()
    async with aiohttp.ClientSession() as session:
        first = asyncio.ensure_future(post(session, relay.url("/q"), "k1", timeout=20))
        await wait_for(lambda: backend.requests == 1, 10, "the first copy at the backend")

        doc = relay.config()
        doc["routes"][0] = _route(backend, after)
        relay.rewrite(doc)
        relay.signal(signal.SIGHUP)
        await wait_for(lambda: bool(relay.logged("config_reloaded")), 10, "the reload")

        # In flight: nothing is stored to replay yet, so the new mode's duplicate answer,
        # whether or not the first copy answers meanwhile (it is let go once the
        # duplicate is counted in the store).
        dup = asyncio.ensure_future(post(session, relay.url("/q"), "k1"))
        await wait_for(lambda: dup.done() or _duplicates(relay.db) == 1, 10, "the duplicate")
        backend.hold.set()
        status, headers, body = await dup
        assert _acked(status, headers, body), (status, headers, body)
        status, headers, body = await first
        if before == "queue":
            assert status == 202 and REPLAYED not in headers
        else:
            assert _answered(status, body), (status, body)
        if before == "queue":  # the relay's record, not the backend's receipt
            await wait_for(lambda: deliveries_by_state(relay.db) == {"delivered": 1}, 10, "done")

        # Settled: the first copy's stored answer where one was kept (sync, hybrid),
        # the duplicate ack for one the queue stored.
        status, headers, body = await post(session, relay.url("/q"), "k1")
        if before == "queue" or after == "queue":
            assert _acked(status, headers, body), (status, headers, body)
        else:
            assert _answered(status, body) and headers.get(REPLAYED) == "true", (status, body)
    assert await relay.stop() == 0
    assert backend.received == {"k1": 1}
    assert not relay.logged("handler_error") and "Traceback" not in relay.stderr()
