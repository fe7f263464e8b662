"""Delivery: Q3 (ingest and delivery at once, sustained) and D1 (drain a backlog)."""

from __future__ import annotations

import time
from contextlib import ExitStack

from bench import loadgen, prefill, profile, relayproc, rows, servers, wrk
from bench.context import Context
from bench.payload import SINK_PATH
from bench.results import Row


def growing(pending_start: int, pending_end: int, ingested: float) -> bool:
    """Pending grows if it rose by more than noise: 2% of what came in, plus a few batches."""
    return pending_end - pending_start > 0.02 * ingested + 500


def _q3_run(ctx: Context, name: str, rate: float | None) -> Row:
    folder = ctx.folder(name)
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        relay = relayproc.start_in(
            stack, ctx, folder, relayproc.RouteSpec("queue", backend.url(SINK_PATH))
        )
        load = wrk.Load(relay.url, prefix=ctx.prefix(name))
        # Sustained: twice the other runs (but --quick only checks the harness works).
        duration = ctx.opts.duration * (1 if ctx.opts.quick else 2)
        # Start counts are taken by the tick as the measured run starts, after the
        # warm-up (or the paced run's calibration), so its backlog is counted.
        start: dict[str, int] = {}

        def tick() -> None:
            if not start:
                start["pending"] = relay.pending()
                start["delivered"] = backend.stats().count
                start["t"] = int(time.monotonic() * 1000)

        if rate is None:
            result = loadgen.measure(
                ctx, name, load, duration=duration, profiled=relay.proc, tick=tick
            )
        else:
            result = loadgen.paced(
                ctx, name, load, rate, duration=duration, profiled=relay.proc, tick=tick
            )
        end_delivered = backend.stats().count
        end_pending = relay.pending()
        elapsed = time.monotonic() - start["t"] / 1000
        delivered_rate = (end_delivered - start["delivered"]) / elapsed
        ingested = result.rate * result.duration_s
        grows = growing(start["pending"], end_pending, ingested)
        row = rows.from_wrk(name, result, relay.proc)
        row.extra.update(
            delivery_rate=delivered_rate,
            pending_start=start["pending"],
            pending_end=end_pending,
            growing=float(grows),
        )
        offered = f"offered {rate:,.0f}/s; " if rate is not None else ""
        row.notes = (
            f"{offered}delivered {delivered_rate:,.0f}/s; pending {start['pending']:,}"
            f" → {end_pending:,} ({'growing' if grows else 'not growing'})"
        )
        return row


def q3(ctx: Context) -> list[Row]:
    # The paced run offers 5% over the target rate, so pacing's inaccuracy cannot
    # decide the target by itself: it is met if delivery keeps up at that rate.
    paced = ctx.opts.q3_rate
    return [_q3_run(ctx, "Q3", None), _q3_run(ctx, f"Q3@{paced}", paced * 1.05)]


def d1(ctx: Context) -> list[Row]:
    """N events pending in the store, as after an outage; the relay starts and delivers."""
    n = ctx.opts.drain
    folder = ctx.folder("D1")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        db = folder / "relay.db"
        prefill.build(db, n, "pending", backend.url(SINK_PATH), prefix=ctx.prefix("D1"))
        started = time.monotonic()
        spec = relayproc.RouteSpec("queue", backend.url(SINK_PATH))
        relay = relayproc.start_in(stack, ctx, folder, spec, db)
        out = folder / "py-spy.raw"
        spy = profile.start(relay.proc.pid, ctx.opts.duration, out) if ctx.opts.profile else None
        # Bounded: a drain slower than 200/s is stopped and reported as far as it got.
        deadline = started + max(60.0, n / 200)
        stats = backend.stats()
        while stats.unique < n and time.monotonic() < deadline:
            if not relay.proc.alive():
                raise RuntimeError(f"D1: the relay exited:\n{relay.proc.log_tail()}")
            time.sleep(0.1)
            stats = backend.stats()
        total = time.monotonic() - started
        if spy is not None:
            ctx.profiles["D1"] = profile.finish(spy, out)
        if stats.first is None or stats.last is None or stats.unique < 2:
            raise RuntimeError(f"D1: {stats.unique} of {n:,} delivered in {total:.0f}s")
        span = max(stats.last - stats.first, 1e-6)
        rate = (stats.unique - 1) / span
        rss = relay.proc.peak_rss_mib()
    done = "" if stats.unique >= n else f"STOPPED at {stats.unique:,} of {n:,}; "
    row = Row(
        name="D1",
        what=f"drain {n:,} pending events after a restart",
        rate=rate,
        rss_mib=rss,
        notes=(
            f"{done}first to last delivery {span:.1f}s; {total:.1f}s from process start;"
            f" {stats.count - stats.unique} re-sent"
            + (f"; {note}" if (note := rows.group_note(relay.proc)) else "")
        ),
    )
    row.extra["delivery_rate"] = rate
    return [row]
