"""Housekeeping on the store's owner: backpressure counts, expired leases,
retention; and the orphan report that start-up and reloads run in the background."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, Final

from relay.admin.api import find_orphans
from relay.errors import StoreError
from relay.logging import get_logger
from relay.runtime import Relay

# Backpressure counts are kept in memory and re-read from the store this often:
# a COUNT over a million pending rows is not free (it holds the store's thread).
COUNT_INTERVAL: Final = 30.0
TICK: Final = 2.0
LEASE_SWEEP_INTERVAL: Final = 30.0
PURGE_BATCH: Final = 500

log = get_logger()


async def housekeeping(relay: Relay) -> None:
    """Backpressure counts, expired leases, retention: small steps, never a long lock."""
    loop = asyncio.get_running_loop()
    next_sweep = next_purge = next_count = loop.time()
    while True:
        await asyncio.sleep(TICK)
        try:
            if loop.time() >= next_count:
                next_count = loop.time() + COUNT_INTERVAL
                counts = await relay.store.undelivered_counts()
                relay.undelivered = {route: float(n) for route, n in counts.items()}
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + LEASE_SWEEP_INTERVAL
                if n := await relay.store.release_expired_leases():
                    log.warning("leases_recovered", deliveries=n)
            if loop.time() >= next_purge:
                next_purge = loop.time() + relay.config.storage.cleanup_interval
                await purge_once(relay)
        except StoreError as exc:
            log.error("housekeeping_failed", error=str(exc))


async def purge_once(relay: Relay) -> int:
    """One retention pass in bounded batches, yielding between them so ingest keeps going."""
    st = relay.config.storage
    now = relay.store.clock()
    total = 0
    while (
        n := await relay.store.purge_expired(
            now - st.dedupe_window, now - st.dead_retention, PURGE_BATCH
        )
    ) > 0:
        total += n
        if n < PURGE_BATCH:
            break
        await asyncio.sleep(0)
    if st.payload_retention is not None:
        while (
            n := await relay.store.drop_payloads(now - st.payload_retention, PURGE_BATCH)
        ) == PURGE_BATCH:
            await asyncio.sleep(0)
    if total:
        log.info("events_purged", count=total)
    return total


_TASKS: set[asyncio.Task[None]] = set()


def background(coro: Coroutine[Any, Any, None]) -> None:
    """A fire-and-forget task, referenced until done so it is not collected."""
    task = asyncio.ensure_future(coro)
    _TASKS.add(task)
    task.add_done_callback(_TASKS.discard)


async def report_orphans(relay: Relay, event: str) -> None:
    """Log (and gauge) deliveries left pending by routes or upstreams no longer configured."""
    try:
        orphans = await find_orphans(relay)
    except StoreError as exc:
        log.error("orphan_count_failed", error=str(exc))
        return
    relay.metrics.set_orphans(orphans)
    if not orphans:
        return
    per_route: dict[str, int] = {}
    for (route, _), n in orphans.items():
        per_route[route] = per_route.get(route, 0) + n
    log.warning(
        event,
        deliveries=sum(orphans.values()),
        routes=per_route,
        upstreams=[{"route": r, "upstream": u, "deliveries": n} for (r, u), n in orphans.items()],
        hint="they stay pending: restore the route or upstream to deliver them, or purge them",
    )
