"""What the store keeps per event, and what that makes a day: ``python -m bench.storage``.

Each event is the bench's 1 KiB JSON body with a sender's usual headers, delivered
at its first attempt (a short JSON answer kept, as ``answer_bytes`` keeps it), in a
real SQLiteStore on disk; unique keys that carry this run's id. The store's pages
in use (``PRAGMA page_count - freelist_count``), divided by the events, are the
bytes per event; a day at 1,000,000 events a day is that times a million, and the
default 7-day ``dedupe_window`` keeps seven days of it. Measured again with
``storage.encryption`` on, and for PostgreSQL with ``--postgres``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
from pathlib import Path

from bench.payload import BODY_SIZE, body_for, fingerprint
from relay.store.base import Attempt, NewEvent, Outcome, Store
from relay.store.sealing import Sealer
from relay.store.sqlite import SQLiteStore

UPSTREAM = "http://127.0.0.1:3000/hooks"
HEADERS = (
    ("Content-Type", "application/json"),
    ("User-Agent", "Stripe/1.0 (+https://stripe.com/docs/webhooks)"),
    ("Stripe-Signature", "t=1700000000,v1=" + "a" * 64),
    ("X-Forwarded-For", "3.18.12.63"),
    ("X-Forwarded-Proto", "https"),
    ("X-Forwarded-Host", "relay.example.com"),
)
ANSWER = b'{"received":true}'
PER_DAY = 1_000_000


def new_event(key: str, now: float) -> NewEvent:
    body = body_for(key)
    return NewEvent(
        route="stripe",
        key=key,
        key_source="json:$.id",
        fingerprint=fingerprint(body),
        method="POST",
        path="/webhooks/stripe",
        query="",
        headers=HEADERS,
        body=body,
        received_at=now,
        upstreams=(UPSTREAM,),
    )


async def fill(store: Store, events: int, run: str) -> None:
    now = time.time()
    for start in range(0, events, 1000):
        batch = [new_event(f"evt_{run}_{i}", now) for i in range(start, min(events, start + 1000))]
        await asyncio.gather(*(store.ingest(e) for e in batch))
        leases = await store.lease_due("stripe", UPSTREAM, len(batch), lease_ttl=60)
        tried = Attempt(now, 3.0, 200, None, ANSWER)
        await asyncio.gather(
            *(store.finish_attempt(lease, tried, Outcome("delivered")) for lease in leases)
        )


async def per_event(store: Store, events: int, run: str) -> float:
    await store.open()
    try:
        before = await store.usage()
        await fill(store, events, run)
        return (await store.usage() - before) / events
    finally:
        await store.close()


async def main(events: int, postgres: str | None) -> None:
    run = f"{os.getpid()}{time.time_ns()}"
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        plain = await per_event(SQLiteStore(Path(tmp) / "plain.db"), events, run)
        rows.append(("SQLite", plain))
        sealed = SQLiteStore(Path(tmp) / "sealed.db", sealer=Sealer(os.urandom(32)))
        rows.append(("SQLite, storage.encryption", await per_event(sealed, events, run)))
    if postgres:
        from relay.store.postgres import PostgresStore

        schema = f"bench_storage_{run[-8:]}"
        import asyncpg  # type: ignore[import-untyped,unused-ignore]

        conn = await asyncpg.connect(postgres)
        await conn.execute(f"CREATE SCHEMA {schema}")
        try:
            store = PostgresStore(postgres, server_settings={"search_path": schema})
            rows.append(
                ("PostgreSQL (tables, indexes, TOAST)", await per_event(store, events, run))
            )
        finally:
            await conn.execute(f"DROP SCHEMA {schema} CASCADE")
            await conn.close()
    print(f"\n{events:,} events of {BODY_SIZE} B bodies, delivered at the first attempt\n")
    print("| store | bytes per event | a day at 1M events | 7 days (default dedupe_window) |")
    print("| --- | --- | --- | --- |")
    for name, size in rows:
        day = size * PER_DAY / 2**30
        print(f"| {name} | {size:,.0f} | {day:,.2f} GiB | {7 * day:,.1f} GiB |")


def cli() -> None:
    p = argparse.ArgumentParser(prog="python -m bench.storage", description=__doc__)
    p.add_argument("--events", type=int, default=50_000)
    p.add_argument("--postgres", nargs="?", const="postgresql://postgres@127.0.0.1:5432/test")
    args = p.parse_args()
    asyncio.run(main(args.events, args.postgres))


if __name__ == "__main__":
    cli()
