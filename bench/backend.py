"""The fast backend every scenario delivers to: counts what it receives, answers 200.

``/sink`` (any path) answers at once; ``/hang`` holds the request for an hour,
so a relay whose upstream it is keeps its dispatcher idle (Q1 measures ingest
alone). ``GET /__bench/stats`` reports how many requests and distinct
Idempotency-Keys arrived, and the monotonic times of the first and last one.
"""

from __future__ import annotations

import asyncio
import sys
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from bench import aioserve
from bench.payload import HANG_PATH, STATS_PATH

OK_BODY: Final = b'{"ok":true}'


@dataclass(slots=True)
class Stats:
    count: int = 0
    first: float | None = None
    last: float | None = None
    keys: set[str] = field(default_factory=set)


STATS: Final = web.AppKey("stats", Stats)


async def receive(request: web.Request) -> web.Response:
    await request.read()
    if request.path == HANG_PATH:
        await asyncio.sleep(3600)
    stats = request.app[STATS]
    now = time.monotonic()
    stats.count += 1
    stats.last = now
    if stats.first is None:
        stats.first = now
    if (key := request.headers.get("Idempotency-Key")) is not None:
        stats.keys.add(key)
    return web.Response(body=OK_BODY, content_type="application/json")


async def stats_handler(request: web.Request) -> web.Response:
    s = request.app[STATS]
    return web.json_response(
        {"count": s.count, "unique": len(s.keys), "first": s.first, "last": s.last}
    )


def build() -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[STATS] = Stats()
    app.router.add_get(STATS_PATH, stats_handler)
    app.router.add_route("*", "/{tail:.*}", receive)
    return app


def main(argv: list[str] | None = None) -> int:
    return aioserve.serve_main(build, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
