"""A backend that can be down: answers 503 while down, 200 otherwise, and logs
every request's monotonic time, status and Idempotency-Key.

``POST /__bench/down`` and ``/__bench/up`` switch it; ``GET /__bench/log``
returns the log as JSON: ``{"requests": [[t, status, key], ...]}``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Final

from aiohttp import web

from bench import aioserve


@dataclass(slots=True)
class State:
    down: bool = False
    requests: list[tuple[float, int, str]] = field(default_factory=list)


STATE: Final = web.AppKey("state", State)


async def receive(request: web.Request) -> web.Response:
    await request.read()
    state = request.app[STATE]
    status = 503 if state.down else 200
    state.requests.append((time.monotonic(), status, request.headers.get("Idempotency-Key", "")))
    return web.Response(status=status, body=b"{}", content_type="application/json")


async def switch(request: web.Request) -> web.Response:
    request.app[STATE].down = request.match_info["to"] == "down"
    return web.json_response({"down": request.app[STATE].down, "at": time.monotonic()})


async def show(request: web.Request) -> web.Response:
    return web.json_response({"requests": request.app[STATE].requests})


def build() -> web.Application:
    app = web.Application()
    app[STATE] = State()
    app.router.add_post("/__bench/{to:down|up}", switch)
    app.router.add_get("/__bench/log", show)
    app.router.add_route("*", "/{tail:.*}", receive)
    return app


def main(argv: list[str] | None = None) -> int:
    return aioserve.serve_main(build, __doc__ or "", argv)


if __name__ == "__main__":
    sys.exit(main())
