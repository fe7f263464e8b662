"""What the store RPC costs: ingest through ``RemoteStore`` against direct ``SQLiteStore``.

``python -m bench.rpc`` runs 64 concurrent callers of unique 1 KiB events in
one process (owner and client share the event loop, so the table shows both
sides' cost together), plus a no-op call that isolates the RPC itself. CPU
µs/call is process time (every thread, SQLite's included) over calls.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import uvloop

from bench.groupcommit import _event
from relay.store.remote import RemoteStore
from relay.store.remote.server import StoreServer
from relay.store.sqlite import SQLiteStore

Row = tuple[str, int, float, float, float]


async def _drive(label: str, call: Callable[[int], Awaitable[object]], n: int, callers: int) -> Row:
    counter = iter(range(n))

    async def caller() -> None:
        for i in counter:
            await call(i)

    wall, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(caller() for _ in range(callers)))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return label, n, n / wall, cpu / n * 1e6, 0.0


async def _noop() -> None:
    return None


async def _round(tmp: Path, events: int, callers: int, start: int) -> list[Row]:
    """One of each, on fresh databases; event keys from ``start`` so they stay unique."""
    direct = SQLiteStore(tmp / f"direct{start}.db")
    await direct.open()
    row = await _drive(
        "ingest, direct SQLiteStore", lambda i: direct.ingest(_event(start + i)), events, callers
    )
    rows = [(*row[:4], direct.stats.rows / max(1, direct.stats.batches))]
    await direct.close()

    owner = SQLiteStore(tmp / f"remote{start}.db")
    await owner.open()
    server = StoreServer(owner, tmp / "store.sock", extras={"noop": _noop})
    await server.start()
    client = RemoteStore(server.path)
    await client.open()
    label = "ingest, RemoteStore -> SQLiteStore"
    row = await _drive(label, lambda i: client.ingest(_event(start + i)), events, callers)
    rows.append((*row[:4], owner.stats.rows / max(1, owner.stats.batches)))
    rows.append(
        await _drive("no-op call, RemoteStore", lambda _i: client.call("noop"), events * 5, callers)
    )
    await client.close()
    await server.close()
    await owner.close()
    return rows


async def main(events: int, callers: int, rounds: int) -> list[Row]:
    """Best of ``rounds`` per row: the disk's fsync time and other load on the
    machine only ever make a run slower."""
    best: dict[str, Row] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in range(rounds):
            for row in await _round(Path(tmp), events, callers, n * events):
                if row[0] not in best or row[2] > best[row[0]][2]:
                    best[row[0]] = row
    return list(best.values())


def report(rows: list[Row], callers: int, loop: str) -> None:
    print(f"\n{callers} concurrent callers, unique 1 KiB events, one process, {loop}, best run\n")
    print("| calls | n | calls/s | CPU µs/call | mean batch |")
    print("| --- | --- | --- | --- | --- |")
    for label, n, rate, cpu, batch in rows:
        print(f"| {label} | {n:,} | {rate:,.0f} | {cpu:.1f} | {batch:.1f} |" if batch else
              f"| {label} | {n:,} | {rate:,.0f} | {cpu:.1f} | - |")  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--callers", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    args = parser.parse_args()
    runner = uvloop.run if args.loop == "uvloop" else asyncio.run
    report(runner(main(args.events, args.callers, args.rounds)), args.callers, args.loop)
