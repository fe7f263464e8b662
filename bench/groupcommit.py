"""Durable ingest with and without group commit, from one run.

``python -m bench.groupcommit`` drives the SQLite store directly (no HTTP) with
64 concurrent writers of unique 1 KiB events, once with ``max_batch=1`` (one
fsync per event) and once with the default, and prints a markdown table.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import tempfile
import time
from pathlib import Path

from relay.store.base import NewEvent
from relay.store.sqlite import SQLiteStore

BODY = b'{"pad": "' + b"x" * 1000 + b'"}'


def _event(n: int) -> NewEvent:
    key = f"evt_{n}"
    return NewEvent(
        route="bench",
        key=key,
        key_source="header:Idempotency-Key",
        fingerprint=hashlib.sha256(key.encode() + BODY).hexdigest(),
        method="POST",
        path="/bench",
        query="",
        headers=(("Content-Type", "application/json"), ("Idempotency-Key", key)),
        body=BODY,
        received_at=time.time(),
        upstreams=("http://127.0.0.1:9/sink",),
    )


async def _run(path: Path, max_batch: int, events: int, writers: int) -> tuple[float, float]:
    store = SQLiteStore(path, max_batch=max_batch)
    await store.open()
    counter = iter(range(events))

    async def writer() -> None:
        for n in counter:
            await store.ingest(_event(n))

    started = time.perf_counter()
    await asyncio.gather(*(writer() for _ in range(writers)))
    elapsed = time.perf_counter() - started
    batch = store.stats.rows / max(1, store.stats.batches)
    await store.close()
    return events / elapsed, batch


async def main(events: int, writers: int) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, max_batch, n in (
            ("without group commit (max_batch=1)", 1, max(500, events // 10)),
            ("with group commit (default)", 256, events),
        ):
            rate, batch = await _run(Path(tmp) / f"b{max_batch}.db", max_batch, n, writers)
            rows.append((label, n, rate, batch))
    base = rows[0][2]
    print(f"\n{writers} concurrent writers, unique 1 KiB events, SQLite WAL synchronous=FULL\n")
    print("| ingest | events | events/s | x without | mean batch |")
    print("| --- | --- | --- | --- | --- |")
    for label, n, rate, batch in rows:
        print(f"| {label} | {n:,} | {rate:,.0f} | {rate / base:.1f}x | {batch:.1f} |")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--writers", type=int, default=64)
    args = parser.parse_args()
    asyncio.run(main(args.events, args.writers))
