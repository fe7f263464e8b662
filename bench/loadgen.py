"""Drive load: a warm-up run, then the measured one; or a run paced to a set rate."""

from __future__ import annotations

import sys
from collections.abc import Callable

from bench import profile, wrk
from bench.context import Context
from bench.procs import Proc

Tick = Callable[[], None]


def measure(
    ctx: Context,
    name: str,
    load: wrk.Load,
    *,
    duration: int | None = None,
    profiled: Proc | None = None,
    tick: Tick | None = None,
    warmup: bool = True,
) -> wrk.WrkResult:
    """Warm up (connections, caches, the JIT-less interpreter's dicts), then measure."""
    o = ctx.opts
    if warmup and o.warmup > 0:
        # Unique mode: other ids, or the measured run would repeat the warm-up's.
        prefix = load.prefix + "-warm" if load.mode == "unique" else load.prefix
        warm = wrk.Load(load.url, load.mode, prefix, load.delay_ms, load.keys)
        wrk.run(ctx.wrk, ctx.script, warm, duration=o.warmup, connections=o.connections)
    seconds = duration or o.duration
    spy = None
    out = ctx.folder(name) / "py-spy.raw"
    if o.profile and profiled is not None:
        spy = profile.start(profiled.pid, seconds, out)
    result = wrk.run(
        ctx.wrk, ctx.script, load, duration=seconds, connections=o.connections, tick=tick
    )
    if spy is not None:
        ctx.profiles[name] = profile.finish(spy, out)
    return result


def paced(
    ctx: Context,
    name: str,
    load: wrk.Load,
    rate: float,
    *,
    duration: int | None = None,
    profiled: Proc | None = None,
    tick: Tick | None = None,
) -> wrk.WrkResult:
    """Offer about ``rate`` requests/s: each connection pauses between requests.

    wrk has no open-loop mode (wrk2 is not in Debian), so a short calibration
    run measures how much of each connection's cycle the answer itself takes,
    and the pause is set to the rest of the cycle. The achieved rate is reported.
    """
    c = ctx.opts.connections
    cycle_ms = c * 1000.0 / rate
    probe = wrk.Load(load.url, load.mode, load.prefix + "-cal", cycle_ms, load.keys)
    first = wrk.run(ctx.wrk, ctx.script, probe, duration=1 if ctx.opts.quick else 2, connections=c)
    overhead = max(0.0, c * 1000.0 / max(first.rate, 1.0) - cycle_ms)
    delay = max(0.0, cycle_ms - overhead)
    if delay == 0.0:
        print(f"  {name}: cannot offer {rate:,.0f}/s; running flat out", file=sys.stderr)
    tuned = wrk.Load(load.url, load.mode, load.prefix, delay, load.keys)
    return measure(ctx, name, tuned, duration=duration, profiled=profiled, tick=tick, warmup=False)
