"""A big store: G1 (Q1 with millions of delivered rows on disk) and M1 (Q1 load
with a large backlog pending, for memory)."""

from __future__ import annotations

import time
from contextlib import ExitStack

from bench import loadgen, prefill, relayproc, rows, servers, wrk
from bench.context import Context
from bench.payload import HANG_PATH, SINK_PATH
from bench.results import Row


def g1(ctx: Context) -> list[Row]:
    n = ctx.opts.rows
    folder = ctx.folder("G1")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        # Delivered rows never go upstream again: their upstream URL does not matter.
        db, meta = prefill.cached_store(n, "http://127.0.0.1:9/prefill")
        spec = relayproc.RouteSpec("queue", backend.url(HANG_PATH), timeout_total="1h")
        # Registered before the relay's stop, so it runs after it (LIFO).
        stack.callback(prefill.revert, db, meta)
        relay = relayproc.start_in(stack, ctx, folder, spec, db)
        load = wrk.Load(relay.url, prefix=ctx.prefix("G1"))
        result = loadgen.measure(ctx, "G1", load, profiled=relay.proc)
        size = sum(p.stat().st_size for p in db.parent.glob(db.name + "*")) / 2**30
        row = rows.from_wrk("G1", result, relay.proc, f"store file {size:.1f} GiB")
        row.what = f"Q1 with {n:,} delivered events already stored"
        return [row]


def m1(ctx: Context) -> list[Row]:
    n = ctx.opts.pending
    folder = ctx.folder("M1")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        db = folder / "relay.db"
        started = time.monotonic()
        prefill.build(db, n, "pending", backend.url(SINK_PATH), prefix=ctx.prefix("M1"))
        print(f"  M1: {n:,} pending events written in {time.monotonic() - started:.0f}s")
        spec = relayproc.RouteSpec("queue", backend.url(SINK_PATH))
        relay = relayproc.start_in(stack, ctx, folder, spec, db)
        load = wrk.Load(relay.url, prefix=ctx.prefix("M1"))
        result = loadgen.measure(ctx, "M1", load, profiled=relay.proc)
        pending = relay.pending()
        delivered = backend.stats().count
        row = rows.from_wrk(
            "M1",
            result,
            relay.proc,
            f"{n:,} pending at start, {pending:,} at end; {delivered:,} delivered meanwhile",
        )
        row.what = f"Q1 load with {n:,} events pending (backend draining)"
        row.extra["pending_start"] = n
        return [row]
