"""B1: the simplest useful Python proxy: one reused ClientSession, no store.

Reads the body, forwards it with its content type and Idempotency-Key to the
same path on the upstream, returns the upstream's status, type and body.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from typing import Final

import aiohttp
from aiohttp import web

from bench import aioserve

SESSION: Final = web.AppKey("session", aiohttp.ClientSession)
UPSTREAM: Final = web.AppKey("upstream", str)
FORWARDED: Final = ("Content-Type", "Idempotency-Key")


async def forward(request: web.Request) -> web.Response:
    body = await request.read()
    headers = {h: v for h in FORWARDED if (v := request.headers.get(h)) is not None}
    url = request.app[UPSTREAM] + request.path_qs
    async with request.app[SESSION].request(
        request.method, url, data=body, headers=headers
    ) as resp:
        data = await resp.read()
        return web.Response(
            status=resp.status,
            body=data,
            content_type=None,
            headers={"Content-Type": resp.headers.get("Content-Type", "application/octet-stream")},
        )


def build(upstream: str) -> web.Application:
    app = web.Application(client_max_size=16 * 1024 * 1024)
    app[UPSTREAM] = upstream.rstrip("/")

    async def session_ctx(app: web.Application) -> AsyncIterator[None]:
        connector = aiohttp.TCPConnector(limit=0)
        app[SESSION] = aiohttp.ClientSession(
            connector=connector, timeout=aiohttp.ClientTimeout(total=30)
        )
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    app.router.add_route("*", "/{tail:.*}", forward)
    return app


def main(argv: list[str] | None = None) -> int:
    args = aioserve.listen_args(argv, __doc__ or "")
    if not args.upstream:
        raise SystemExit("--upstream is required")
    return aioserve.run(build(args.upstream), args.host, args.port)


if __name__ == "__main__":
    sys.exit(main())
