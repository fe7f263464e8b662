"""Ingest as the sender sees it: Q1 (unique events), L1 (Q1 latency at half its
peak), Q2 (duplicates only), S1 (sync mode, unique events)."""

from __future__ import annotations

import urllib.request
from collections.abc import Callable
from contextlib import ExitStack

from bench import loadgen, relayproc, rows, servers, wrk
from bench.context import Context
from bench.payload import HANG_PATH, SINK_PATH, body_for
from bench.results import Row

DUP_KEYS = 100


def hanging_relay(
    ctx: Context,
    name: str,
    stack: ExitStack,
    storage_url: str | None = None,
    *,
    filtered: bool = False,
    tls: bool = False,
    encrypted: bool = False,
) -> relayproc.Relay:
    """A queue route whose upstream holds every request: the dispatcher's 16
    attempts wait, so the relay spends its time on ingest alone."""
    folder = ctx.folder(name)
    backend = servers.backend_in(stack, folder)
    spec = relayproc.RouteSpec(
        "queue",
        backend.url(HANG_PATH),
        timeout_total="1h",
        storage_url=storage_url,
        filtered=filtered,
        tls=tls,
        encrypted=encrypted,
    )
    return relayproc.start_in(stack, ctx, folder, spec)


def _batch_note(relay: relayproc.Relay) -> str:
    try:
        count = relay.metric("relay_store_batch_size_count")
        total = relay.metric("relay_store_batch_size_sum")
    except OSError:
        return ""
    return f"mean commit batch {total / count:.0f}" if count else ""


def q1(ctx: Context) -> list[Row]:
    with ExitStack() as stack:
        relay = hanging_relay(ctx, "Q1", stack)
        load = wrk.Load(relay.url, prefix=ctx.prefix("Q1"))
        result = loadgen.measure(ctx, "Q1", load, profiled=relay.proc)
        return [rows.from_wrk("Q1", result, relay.proc, _batch_note(relay))]


def f1(ctx: Context) -> list[Row]:
    """Q1 with five filter rules on the route, none met: what filtering costs."""
    with ExitStack() as stack:
        relay = hanging_relay(ctx, "F1", stack, filtered=True)
        load = wrk.Load(relay.url, prefix=ctx.prefix("F1"))
        result = loadgen.measure(ctx, "F1", load, profiled=relay.proc)
        return [rows.from_wrk("F1", result, relay.proc, "five rules, none met")]


def qt(ctx: Context) -> list[Row]:
    """Q1 with the webhook listener serving TLS itself: what HTTPS costs."""
    return _q1_variant(ctx, "QT", tls=True, encrypted=False)


def qe(ctx: Context) -> list[Row]:
    """Q1 with storage.encryption: what sealing each body and its headers costs."""
    return _q1_variant(ctx, "QE", tls=False, encrypted=True)


def _q1_variant(ctx: Context, name: str, *, tls: bool, encrypted: bool) -> list[Row]:
    with ExitStack() as stack:
        relay = hanging_relay(ctx, name, stack, tls=tls, encrypted=encrypted)
        load = wrk.Load(relay.url, prefix=ctx.prefix(name))
        result = loadgen.measure(ctx, name, load, profiled=relay.proc)
        row = rows.from_wrk(name, result, relay.proc, _batch_note(relay))
    q1 = ctx.results.get("Q1")
    if q1 is not None and q1.rate and row.rate:
        row.notes = f"{row.rate / q1.rate:.0%} of Q1's rate; {row.notes}".rstrip("; ")
    return [row]


def l1(ctx: Context) -> list[Row]:
    peak = ctx.results["Q1"].rate or 0.0
    if peak <= 0:
        raise RuntimeError("L1 needs Q1's peak rate, and Q1 measured none")
    with ExitStack() as stack:
        relay = hanging_relay(ctx, "L1", stack)
        load = wrk.Load(relay.url, prefix=ctx.prefix("L1"))
        target = peak / 2
        result = loadgen.paced(ctx, "L1", load, target, profiled=relay.proc)
        note = f"offered {target:,.0f}/s (half of Q1)"
        return [rows.from_wrk("L1", result, relay.proc, note)]


def _post(url: str, event_id: str) -> None:
    req = urllib.request.Request(
        url,
        data=body_for(event_id),
        headers={"Content-Type": "application/json", "Idempotency-Key": event_id},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        if resp.status // 100 != 2:
            raise RuntimeError(f"pre-seeding {event_id}: HTTP {resp.status}")


def q2(ctx: Context) -> list[Row]:
    folder = ctx.folder("Q2")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        relay = relayproc.start_in(
            stack, ctx, folder, relayproc.RouteSpec("queue", backend.url(SINK_PATH))
        )
        prefix = ctx.prefix("Q2")
        for i in range(DUP_KEYS):
            _post(relay.url, f"{prefix}-{i}")
        load = wrk.Load(relay.url, mode="dup", prefix=prefix, keys=DUP_KEYS)
        result = loadgen.measure(ctx, "Q2", load, profiled=relay.proc)
        dups = relay.metric("relay_duplicates_total")
        mismatches = relay.metric("relay_payload_mismatches_total")
        accepted = relay.metric("relay_webhooks_received_total", outcome="accepted")
        note = f"{DUP_KEYS} keys; {accepted:.0f} accepted, {dups:,.0f} duplicates, {mismatches:.0f} mismatches"
        row = rows.from_wrk("Q2", result, relay.proc, note)
        if accepted != DUP_KEYS or mismatches:
            row.notes += " (UNEXPECTED)"
        return [row]


def _in_line(ctx: Context, name: str, spec_of: Callable[[str], relayproc.RouteSpec]) -> Row:
    """Unique events to a route that forwards in line to the fast backend."""
    folder = ctx.folder(name)
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        relay = relayproc.start_in(stack, ctx, folder, spec_of(backend.url(SINK_PATH)))
        load = wrk.Load(relay.url, prefix=ctx.prefix(name))
        result = loadgen.measure(ctx, name, load, profiled=relay.proc)
        answered = relay.metric("relay_webhooks_received_total", outcome="answered")
        note = f"{answered:,.0f} answered in line" if spec_of("x").mode == "hybrid" else ""
        return rows.from_wrk(name, result, relay.proc, note)


def s1(ctx: Context) -> list[Row]:
    return [_in_line(ctx, "S1", lambda up: relayproc.RouteSpec("sync", up))]


def sh(ctx: Context) -> list[Row]:
    return [_in_line(ctx, "SH", lambda up: relayproc.RouteSpec("sync", up, dedupe="shadow"))]


def h1(ctx: Context) -> list[Row]:
    return [_in_line(ctx, "H1", lambda up: relayproc.RouteSpec("hybrid", up))]
