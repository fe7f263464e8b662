"""E1 (sustained end to end) and the PostgreSQL rows: PQ1, PD1 and PE1 (Q1, D1
and E1 on PostgreSQL) and R2 (two replicas on one database behind a round-robin
sender).

E1 is the highest paced (open-loop) rate at which, for one run, the backend
receives at least 98 % of what was acked and the ack p99 stays at or under
50 ms, found by a short search. The PostgreSQL rows need ``--postgres``; each
runs in a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import asyncio
import collections
import json
import os
import secrets
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import aiohttp

from bench import loadgen, relayproc, rows, servers, wrk
from bench.context import Context
from bench.payload import SINK_PATH, body_for
from bench.results import Row
from bench.scen_ingest import hanging_relay

E1_P99_MS = 50.0
E1_DELIVERED = 0.98
Spec = Callable[[str], relayproc.RouteSpec]


@contextmanager
def pg_schema(url: str) -> Iterator[str]:
    """A fresh schema on ``url``; the URL that uses it."""
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    schema = f"bench_{secrets.token_hex(5)}"

    async def run(sql: str) -> None:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    asyncio.run(run(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in url else "?"
    try:
        yield f"{url}{sep}search_path={schema}"
    finally:
        asyncio.run(run(f"DROP SCHEMA IF EXISTS {schema} CASCADE"))


def _pg(ctx: Context) -> str:
    if ctx.opts.postgres is None:
        raise RuntimeError("needs --postgres (a PostgreSQL URL; the local test server by default)")
    return ctx.opts.postgres


def q1_pg(ctx: Context) -> list[Row]:
    with ExitStack() as stack:
        url = stack.enter_context(pg_schema(_pg(ctx)))
        relay = hanging_relay(ctx, "PQ1", stack, storage_url=url)
        load = wrk.Load(relay.url, prefix=ctx.prefix("PQ1"))
        result = loadgen.measure(ctx, "PQ1", load, profiled=relay.proc)
        return [rows.from_wrk("PQ1", result, relay.proc, "PostgreSQL")]


def _admin(relay: relayproc.Relay, path: str) -> None:
    req = urllib.request.Request(
        f"http://127.0.0.1:{relay.admin_port}{path}",
        data=json.dumps({"reason": "bench"}).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30):
        pass


async def _send(urls: list[str], keys: list[str], concurrency: int = 64) -> list[int]:
    """Post each key once, round robin over ``urls``; how many each URL acked."""
    queue = collections.deque(enumerate(keys))
    acked = [0] * len(urls)
    async with aiohttp.ClientSession() as session:

        async def one() -> None:
            while queue:
                i, key = queue.popleft()
                n = i % len(urls)
                headers = {"Idempotency-Key": key, "Content-Type": "application/json"}
                async with session.post(urls[n], data=body_for(key), headers=headers) as resp:
                    if resp.status // 100 == 2:
                        acked[n] += 1

        await asyncio.gather(*(one() for _ in range(concurrency)))
    return acked


def d1_pg(ctx: Context) -> list[Row]:
    """N events stored while the route is paused, then resumed: the drain on PostgreSQL."""
    n = ctx.opts.drain
    folder = ctx.folder("PD1")
    with ExitStack() as stack:
        url = stack.enter_context(pg_schema(_pg(ctx)))
        backend = servers.backend_in(stack, folder)
        spec = relayproc.RouteSpec("queue", backend.url(SINK_PATH), storage_url=url)
        relay = relayproc.start_in(stack, ctx, folder, spec)
        _admin(relay, "/api/v1/routes/bench/pause")
        keys = [f"{ctx.prefix('PD1')}-{i}" for i in range(n)]
        asyncio.run(_send([relay.url], keys))
        started = time.monotonic()
        _admin(relay, "/api/v1/routes/bench/resume")
        deadline = started + max(60.0, n / 200)
        stats = backend.stats()
        while stats.unique < n and time.monotonic() < deadline:
            time.sleep(0.1)
            stats = backend.stats()
        if stats.first is None or stats.last is None or stats.unique < 2:
            raise RuntimeError(f"PD1: {stats.unique} of {n:,} delivered")
        span = max(stats.last - stats.first, 1e-6)
        row = Row(
            name="PD1",
            what=f"drain {n:,} events held by a pause, on PostgreSQL",
            rate=(stats.unique - 1) / span,
            rss_mib=relay.proc.peak_rss_mib(),
            notes=f"first to last delivery {span:.1f}s; {stats.count - stats.unique} re-sent",
        )
    return [row]


@dataclass(frozen=True, slots=True)
class Step:
    offered: float
    acked: float  # per second
    delivered: float  # share of the acked the backend received by the step's end
    p99_ms: float

    @property
    def holds(self) -> bool:
        return self.delivered >= E1_DELIVERED and self.p99_ms <= E1_P99_MS


def _step(ctx: Context, name: str, spec_of: Spec, rate: float, n: int) -> Step:
    folder = ctx.folder(f"{name}-{n}")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        relay = relayproc.start_in(stack, ctx, folder, spec_of(backend.url(SINK_PATH)))
        load = wrk.Load(relay.url, prefix=ctx.prefix(f"{name}-{n}"))
        duration = ctx.opts.duration if ctx.opts.quick else max(20, ctx.opts.duration)
        start: list[int] = []

        def tick() -> None:  # the measured run begins (after the pacing's calibration)
            if not start:
                start.append(backend.stats().unique)

        result = loadgen.paced(ctx, f"{name}-{n}", load, rate, duration=duration, tick=tick)
        acked = result.requests - result.status_errors
        got = backend.stats().unique - (start[0] if start else 0)
        return Step(rate, result.rate, got / max(1, acked), result.p99_ms)


def _e1(ctx: Context, name: str, spec_of: Spec) -> Row:
    steps: list[Step] = []
    low, high = 0.0, None
    rate = 500.0 if ctx.opts.quick else 1000.0
    for n in range(2 if ctx.opts.quick else 6):
        step = _step(ctx, name, spec_of, rate, n)
        steps.append(step)
        print(
            f"   {name} step {n}: offered {rate:,.0f}/s, acked {step.acked:,.0f}/s,"
            f" delivered {step.delivered:.1%}, p99 {step.p99_ms:.1f} ms"
            f" -> {'holds' if step.holds else 'does not'}",
            flush=True,
        )
        if step.holds:
            low = max(low, step.acked)
            rate = rate * 2 if high is None else (rate + high) / 2
        else:
            high = rate
            rate = (low + rate) / 2 if low else rate / 2
    best = max((s for s in steps if s.holds), key=lambda s: s.acked, default=None)
    tried = ", ".join(f"{s.offered:,.0f}{'+' if s.holds else '-'}" for s in steps)
    return Row(
        name=name,
        what="sustained end to end: paced, backlog not growing, ack p99 <= 50 ms",
        rate=None if best is None else best.acked,
        p99_ms=None if best is None else best.p99_ms,
        notes=f"offered/s tried: {tried}",
    )


def e1(ctx: Context) -> list[Row]:
    return [_e1(ctx, "E1", lambda up: relayproc.RouteSpec("queue", up))]


def e1_pg(ctx: Context) -> list[Row]:
    with pg_schema(_pg(ctx)) as base:
        # One schema for the search: each step's backend has a URL of its own, so what
        # an earlier step left pending is another upstream's, not this step's.
        def spec_of(up: str) -> relayproc.RouteSpec:
            return relayproc.RouteSpec("queue", up, storage_url=base)

        return [_e1(ctx, "PE1", spec_of)]


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def r2_pg(ctx: Context) -> list[Row]:
    """Two replicas on one database, a round-robin sender, the backend behind both."""
    folder = ctx.folder("R2")
    n = 2_000 if ctx.opts.quick else 20_000
    with ExitStack() as stack:
        url = stack.enter_context(pg_schema(_pg(ctx)))
        backend = servers.backend_in(stack, folder)
        spec = relayproc.RouteSpec("queue", backend.url(SINK_PATH), storage_url=url)
        replicas = [relayproc.start_in(stack, ctx, folder / f"replica{i}", spec) for i in range(2)]
        cpu0 = [_cpu_seconds(r.proc.pid) for r in replicas]
        keys = [f"{ctx.prefix('R2')}-{i}" for i in range(n)]
        started = time.monotonic()
        acked = asyncio.run(_send([r.url for r in replicas], keys))
        ack_rate = sum(acked) / (time.monotonic() - started)
        while backend.stats().unique < n and time.monotonic() < started + 120:
            time.sleep(0.1)
        stats = backend.stats()
        cpu = [_cpu_seconds(r.proc.pid) - c for r, c in zip(replicas, cpu0, strict=True)]
    per_event = [c * 1e6 / max(1, a) for c, a in zip(cpu, acked, strict=True)]
    span = (stats.last or 0) - started
    return [
        Row(
            name="R2",
            what="two replicas on one PostgreSQL database, round-robin sender",
            rate=ack_rate,
            notes=(
                f"acked {acked[0]:,} + {acked[1]:,}; {stats.unique:,} delivered in {span:.1f}s;"
                f" CPU per event (ingest and delivery) {per_event[0]:.0f} and {per_event[1]:.0f} µs"
            ),
        )
    ]
