"""B0: load straight to the backend; B1: through a naive aiohttp proxy."""

from __future__ import annotations

from contextlib import ExitStack

from bench import loadgen, rows, servers, wrk
from bench.context import Context
from bench.payload import SINK_PATH
from bench.results import Row


def b0(ctx: Context) -> list[Row]:
    folder = ctx.folder("B0")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        load = wrk.Load(backend.url(SINK_PATH), prefix=ctx.prefix("B0"))
        result = loadgen.measure(ctx, "B0", load)
        return [rows.from_wrk("B0", result, backend.proc, "RSS: the backend")]


def b1(ctx: Context) -> list[Row]:
    folder = ctx.folder("B1")
    with ExitStack() as stack:
        backend = servers.backend_in(stack, folder)
        proxy = servers.start_proxy(folder, backend.url(""))
        stack.callback(proxy.proc.stop)
        load = wrk.Load(proxy.url(SINK_PATH), prefix=ctx.prefix("B1"))
        result = loadgen.measure(ctx, "B1", load, profiled=proxy.proc)
        return [rows.from_wrk("B1", result, proxy.proc, "RSS: the proxy")]
