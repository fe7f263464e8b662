"""Housekeeping on the store's owner: backpressure counts, expired leases,
retention; and the orphan report that start-up and reloads run in the background.

Runs in the process that holds the full store: the single process, or the
owner of a worker group (never a worker: it has only the hot path).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from typing import Final

from relay.config import Config
from relay.errors import StoreError
from relay.forward import shown_url
from relay.logging import get_logger
from relay.runtime import Relay, RouteRuntime
from relay.store import open_store_for_url
from relay.store.base import Inspection, Store, Upkeep
from relay.store.sealing import CLEAR_SEALER, Sealer

# Backpressure counts are kept in memory and re-read from the store this often:
# a COUNT over a million pending rows is not free (it holds the store's thread).
COUNT_INTERVAL: Final = 30.0
TICK: Final = 2.0
LEASE_SWEEP_INTERVAL: Final = 30.0
# Every TICK each replica heartbeats and looks for dead ones: a replica silent for
# DEAD_AFTER is dead, and its leases are returned at once (not when they expire).
DEAD_AFTER: Final = 10.0
PURGE_BATCH: Final = 500
PROBE: Final = 8  # a cap's first step, before the size of what it drops is known
# Free pages returned per step (4 MiB at SQLite's 4 KiB pages), steps per pass, and
# the pause between steps: a pass holds the writer for short moments only.
GIVE_BACK_PAGES: Final = 1024
GIVE_BACK_STEPS: Final = 64
GIVE_BACK_PAUSE: Final = 0.05

log = get_logger()


def sealer_of(config: Config) -> Sealer:
    """What ``storage.encryption`` asks for: seal with its key, open with any of them."""
    enc = config.storage.encryption
    return CLEAR_SEALER if enc is None else Sealer(enc.current, enc.old)


def open_store(config: Config) -> Store:
    """The store ``storage`` names, sealing with ``storage.encryption``'s keys."""
    return open_store_for_url(config.storage.url, sealer=sealer_of(config))


async def take_over(relay: Relay, store: Upkeep) -> None:
    """Start-up, once the store is open: leases left by a crashed process go back
    (deliveries to pending, sync claims free), and the backpressure counts are read."""
    await store.heartbeat()  # registered before it takes any lease
    if returned := await store.recover():
        log.warning("leases_recovered", deliveries=returned)
    await relay.backlog.refresh(store.undelivered_counts)


async def housekeeping(relay: Relay, store: Upkeep) -> None:
    """Backpressure counts, expired leases, retention: small steps, never a long lock."""
    loop = asyncio.get_running_loop()
    next_sweep = next_purge = next_count = loop.time()
    while True:
        await asyncio.sleep(TICK)
        try:
            await keep_alive(relay, store)
            if loop.time() >= next_count:
                next_count = loop.time() + COUNT_INTERVAL
                await relay.backlog.refresh(store.undelivered_counts)
            if loop.time() >= next_sweep:
                next_sweep = loop.time() + LEASE_SWEEP_INTERVAL
                if n := await store.release_expired_leases():
                    log.warning("leases_recovered", deliveries=n)
            if loop.time() >= next_purge:
                next_purge = loop.time() + relay.config.storage.cleanup_interval
                await purge_once(relay, store)
        except StoreError as exc:
            log.error("housekeeping_failed", error=str(exc))


async def keep_alive(relay: Relay, store: Upkeep) -> None:
    """Heartbeat, and return the leases of replicas that stopped heartbeating."""
    if not await store.heartbeat():
        log.warning(
            "replica_declared_dead",
            replica=store.replica_id,
            hint="this process was silent too long; its leases were returned to the others",
        )
    for dead, returned in await store.reap_dead_replicas(store.clock() - DEAD_AFTER):
        log.warning(
            "replica_dead",
            replica=dead.id,
            host=dead.host,
            pid=dead.pid,
            silent_for=round(store.clock() - dead.heartbeat_at, 1),
            deliveries_returned=returned,
        )
        if returned:
            for rt in relay.routes.values():
                relay.outbound.wake(rt.cfg.name)


async def purge_once(relay: Relay, store: Upkeep) -> int:
    """One retention pass in bounded batches, yielding between them so ingest keeps going."""
    st = relay.config.storage
    now = store.clock()
    total = 0
    while (
        n := await store.purge_expired(now - st.dedupe_window, now - st.dead_retention, PURGE_BATCH)
    ) > 0:
        total += n
        if n < PURGE_BATCH:
            break
        await asyncio.sleep(0)
    if st.payload_retention is not None:
        while (
            n := await store.drop_payloads(now - st.payload_retention, PURGE_BATCH)
        ) == PURGE_BATCH:
            await asyncio.sleep(0)
    if total:
        log.info("events_purged", count=total)
    await enforce_caps(relay, store)
    await give_back(store)
    return total


async def enforce_caps(relay: Relay, store: Upkeep) -> None:
    """``storage.max_bytes`` / ``max_rows``: the oldest finished data goes until the
    store is under them, in this order: bodies and attempts (the keys stay), then
    whole events past their dedupe window, then (``cap_policy: drop_keys``) any
    finished event. Open work never goes. With only in-window keys left under
    ``keep_keys``, new events are refused (503) until there is room."""
    st = relay.config.storage
    if st.max_bytes is None and st.max_rows is None:
        return

    # Measured once a pass; what each step removes is counted off (a page a dropped
    # body leaves half empty is reused, not returned: see storage.max_bytes).
    extra_bytes = 0 if st.max_bytes is None else await store.usage() - st.max_bytes
    extra_rows = 0 if st.max_rows is None else await store.count_events() - st.max_rows
    counted = relay.metrics.capped
    after: int | None = 0
    per = 0  # bytes a step freed per event: sizes the next step, so little more goes
    while extra_bytes > 0 and after is not None:  # fewer bytes first; rows need fewer events
        after, n, freed = await store.cap_bodies(after, _step(extra_bytes, per))
        counted.labels("bodies").inc(n)
        extra_bytes, per = extra_bytes - freed, freed // max(n, 1)
        await asyncio.sleep(0)
    window = store.clock() - st.dedupe_window
    for seen_before in (window, None) if st.cap_policy == "drop_keys" else (window,):
        while extra_bytes > 0 or extra_rows > 0:
            limit = max(_step(extra_bytes, per) if extra_bytes > 0 else 1, extra_rows)
            n, freed = await store.cap_events(seen_before, min(limit, PURGE_BATCH))
            if not n:
                break
            counted.labels("events" if seen_before is not None else "keys").inc(n)
            extra_bytes, extra_rows = extra_bytes - freed, extra_rows - n
            per = freed // n
            await asyncio.sleep(0)
    full = extra_bytes > 0 or extra_rows > 0
    if full and store.full is None:
        store.full = (
            f"the store is at its cap (storage.max_bytes {st.max_bytes}, max_rows"
            f" {st.max_rows}) and only keys inside their dedupe window are left"
            " (cap_policy: keep_keys)"
        )
        log.error("store_full", reason=store.full)
    elif not full and store.full is not None:
        store.full = None
        log.info("store_room_again")


def _step(extra: int, per: int) -> int:
    """How many events to take next for ``extra`` bytes, at ``per`` bytes each (0: not
    known yet, so a few, to learn it): enough, and not many more."""
    if per <= 0:
        return PROBE
    return min(PURGE_BATCH, max(1, -(-extra // per)))


async def give_back(store: Upkeep) -> int:
    """Free pages back to the filesystem, a few at a time (SQLite; a no-op elsewhere)."""
    total = 0
    for _ in range(GIVE_BACK_STEPS):
        if not (freed := await store.give_back(GIVE_BACK_PAGES)):
            break
        total += freed
        await asyncio.sleep(GIVE_BACK_PAUSE)
    if total:
        log.info("store_space_given_back", bytes=total)
    return total


def orphans(
    routes: Iterable[RouteRuntime], opened: Mapping[tuple[str, str], int]
) -> dict[tuple[str, str], int]:
    """Of the open deliveries per (route, upstream), those no delivery loop serves:
    their route or upstream left the config."""
    served = {(rt.cfg.name, up) for rt in routes if rt.cfg.queued for up in rt.cfg.served}
    return {k: n for k, n in sorted(opened.items()) if k not in served}


async def find_orphans(relay: Relay, store: Inspection) -> dict[tuple[str, str], int]:
    return orphans(relay.routes.values(), await store.open_deliveries())


async def report_orphans(relay: Relay, store: Inspection, event: str) -> None:
    """Log (and gauge) deliveries left pending by routes or upstreams no longer configured."""
    try:
        found = await find_orphans(relay, store)
    except StoreError as exc:
        log.error("orphan_count_failed", error=str(exc))
        return
    relay.metrics.set_orphans(found)
    if not found:
        return
    per_route: dict[str, int] = {}
    for (route, _), n in found.items():
        per_route[route] = per_route.get(route, 0) + n
    log.warning(
        event,
        deliveries=sum(found.values()),
        routes=per_route,
        upstreams=[
            {"route": r, "upstream": shown_url(u), "deliveries": n} for (r, u), n in found.items()
        ],
        hint="they stay pending: restore the route or upstream to deliver them, or purge them",
    )
