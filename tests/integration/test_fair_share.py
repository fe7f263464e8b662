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


async def _ingest_batches(tmp_path: Path, outcomes_waiting: bool) -> list[int]:
    """Sizes of the ingest batches committed when 40 senders arrive while the writer
    thread is held, with or without delivery outcomes waiting for it too."""
    store = SQLiteStore(tmp_path / "relay.db")
    await store.open()
    try:
        for i in range(4):
            await store.ingest(event(f"old-{i}"))
        leases = await store.lease_due("orders", UP_A, 4, lease_ttl=60)
        sizes: list[int] = []
        store.stats.observer = lambda n, _seconds, _ok: sizes.append(n)
        hold = threading.Event()
        held = asyncio.ensure_future(store._db.call(lambda _c: hold.wait(10)))
        finishes = []
        if outcomes_waiting:
            finishes = [
                asyncio.ensure_future(store.finish_attempt(lease, attempt(), Outcome("delivered")))
                for lease in leases
            ]
            assert store._finisher is not None
            while not store._finisher.busy:
                await asyncio.sleep(0)
        ingests = [asyncio.ensure_future(store.ingest(event(f"new-{i}"))) for i in range(40)]
        while not store._batcher or not store._batcher.busy:
            await asyncio.sleep(0)
        hold.set()
        await held
        assert all(got.first for got in await asyncio.gather(*ingests))
        assert await asyncio.gather(*finishes) == [True] * len(finishes)
        return sizes
    finally:
        await store.close()


async def test_sqlite_ingest_batches_yield_to_waiting_delivery_outcomes(tmp_path: Path) -> None:
    alone = await _ingest_batches(tmp_path / "alone", outcomes_waiting=False)
    assert alone == [40]  # nothing to share with: one batch
    shared = await _ingest_batches(tmp_path / "shared", outcomes_waiting=True)
    # The first batch waited beside a batch of outcomes: at most the floor (the
    # outcomes' batch was smaller); the rest went once the outcomes were recorded.
    assert shared[0] == INGEST_SHARE_FLOOR
    assert sum(shared) == 40 and max(shared[1:]) > INGEST_SHARE_FLOOR
