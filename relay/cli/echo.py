"""A tiny backend for trying the relay: prints each request, answers 200."""

from __future__ import annotations

import json
import sys

from aiohttp import web

from relay.config import parse_listen


async def _echo(request: web.Request) -> web.Response:
    body = await request.read()
    key = request.headers.get("Idempotency-Key", "-")
    print(
        json.dumps(
            {
                "method": request.method,
                "path": request.path_qs,
                "idempotency_key": key,
                "bytes": len(body),
            }
        ),
        flush=True,
    )
    return web.json_response({"received": True, "idempotency_key": key})


def run_echo(listen: str) -> int:
    where = parse_listen(listen)
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", _echo)
    print(f"echo backend on http://{where}/ (Ctrl-C to stop)", file=sys.stderr)
    web.run_app(app, host=where.host, port=where.port, print=None)
    return 0
