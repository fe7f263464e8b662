"""Delivery's fair share of SQLite's one writer thread against a busy listener."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from pathlib import Path

from relay.store.base import Outcome
from relay.store.batch import GroupCommitter
from relay.store.sqlite import SQLiteStore
from relay.store.sqlite.store import INGEST_SHARE_FLOOR
from tests.integration.test_store import UP_A, attempt, event


async def test_a_share_caps_the_next_batch_and_busy_covers_the_commit() -> None:
    release = asyncio.Event()
    sizes: list[int] = []

    async def commit(items: Sequence[int]) -> list[int]:
        sizes.append(len(items))
        await release.wait()
        return list(items)

    cap: list[int | None] = [None]
    committer: GroupCommitter[int, int] = GroupCommitter(
        commit,
        max_batch=100,
        on_error=lambda exc: exc,
        closed_error=lambda: RuntimeError("closed"),
        share=lambda: cap[0],
    )
    assert not committer.busy
    first = asyncio.ensure_future(committer.submit(0))
    while not sizes:
        await asyncio.sleep(0)
    assert committer.busy  # committing, nothing queued
    cap[0] = 3
    rest = [asyncio.ensure_future(committer.submit(i)) for i in range(1, 11)]
    release.set()
    assert await asyncio.gather(first, *rest) == list(range(11))
    assert sizes == [1, 3, 3, 3, 1]
    assert not committer.busy
    await committer.close()


async def _batches(tmp_path: Path, outcomes: str | None) -> list[tuple[str, int]]:
    """The batches committed, in order (("ingest" | "finish", size)), when 40 senders
    arrive while the writer thread is held, with 4 delivery outcomes queued
    ``before`` or ``after`` them, or none."""
    store = SQLiteStore(tmp_path / "relay.db")
    await store.open()
    try:
        for i in range(4):
            await store.ingest(event(f"old-{i}"))
        leases = await store.lease_due("orders", UP_A, 4, lease_ttl=60)
        order: list[tuple[str, int]] = []
        store.stats.observer = lambda n, _seconds, _ok: order.append(("ingest", n))
        store.finish_stats.observer = lambda n, _seconds, _ok: order.append(("finish", n))
        hold = threading.Event()
        held = asyncio.ensure_future(store._db.call(lambda _c: hold.wait(10)))
        assert store._batcher is not None and store._finisher is not None

        async def finish() -> list[asyncio.Future[bool]]:
            assert store._finisher is not None
            queued: list[asyncio.Future[bool]] = [
                asyncio.ensure_future(store.finish_attempt(lease, attempt(), Outcome("delivered")))
                for lease in leases
            ]
            while not store._finisher.busy:
                await asyncio.sleep(0)
            return queued

        finishes = await finish() if outcomes == "before" else []
        ingests = [asyncio.ensure_future(store.ingest(event(f"new-{i}"))) for i in range(40)]
        while not store._batcher.busy:
            await asyncio.sleep(0)
        if outcomes == "after":
            finishes = await finish()
        hold.set()
        await held
        assert all(got.first for got in await asyncio.gather(*ingests))
        assert await asyncio.gather(*finishes) == [True] * len(finishes)
        return order
    finally:
        await store.close()


async def test_sqlite_ingest_batches_yield_to_waiting_delivery_outcomes(tmp_path: Path) -> None:
    assert await _batches(tmp_path / "alone", None) == [("ingest", 40)]  # one batch
    # Outcomes that were waiting first are committed first, whole.
    assert await _batches(tmp_path / "before", "before") == [("finish", 4), ("ingest", 40)]
    # Outcomes that arrive behind a waiting ingest: the ingest batch the thread takes
    # beside them is at most the floor (the outcomes' batch was smaller); the
    # outcomes go next, then the rest of the ingests.
    shared = await _batches(tmp_path / "after", "after")
    assert shared[:2] == [("ingest", INGEST_SHARE_FLOOR), ("finish", 4)]
    assert sum(n for kind, n in shared if kind == "ingest") == 40
