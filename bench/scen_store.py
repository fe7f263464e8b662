"""A big store: G1 (Q1 with millions of delivered rows on disk), M1 (Q1 load with a
large backlog pending, for memory), and QP / QC (Q1 on a store of delivered rows,
without and with a storage cap being enforced while it runs)."""

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


CAPPED_ROWS = 200_000
CAP = 150_000


def qp(ctx: Context) -> list[Row]:
    return _prefilled(ctx, "QP", "")


def qc(ctx: Context) -> list[Row]:
    # Over the cap from the start, and more so with every event Q1 adds (all pending:
    # the upstream hangs), so each cleanup (every second) drops finished events.
    extra = f"max_rows: {CAP}, cap_policy: drop_keys, cleanup_interval: 1s"
    return _prefilled(ctx, "QC", extra)


def _prefilled(ctx: Context, name: str, storage_extra: str) -> list[Row]:
    folder = ctx.folder(name)
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        db = folder / "relay.db"
        prefill.build(db, CAPPED_ROWS, "delivered", backend.url(SINK_PATH), ctx.prefix(name))
        spec = relayproc.RouteSpec(
            "queue", backend.url(HANG_PATH), timeout_total="1h", storage_extra=storage_extra
        )
        relay = relayproc.start_in(stack, ctx, folder, spec, db)
        load = wrk.Load(relay.url, prefix=ctx.prefix(name))
        result = loadgen.measure(ctx, name, load, profiled=relay.proc)
        capped = relay.metric("relay_store_capped_total")
        note = f"{capped:,.0f} events capped during the run" if storage_extra else ""
        row = rows.from_wrk(name, result, relay.proc, note)
    if storage_extra and (qp := ctx.results.get("QP")) is not None and qp.rate and row.rate:
        row.notes = f"{row.rate / qp.rate:.0%} of QP's rate; {row.notes}"
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
