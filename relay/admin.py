"""The admin listener: /metrics, /healthz, /readyz (and the inspection API)."""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.runtime import RELAY, Relay

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes must work without a token: container runtimes and load balancers have none.
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    token = request.app[RELAY].config.admin.token
    if token is None or request.path in OPEN_PATHS:
        return await handler(request)
    given = request.headers.get("Authorization", "")
    scheme, _, value = given.partition(" ")
    # Compare in constant time so the token cannot be guessed byte by byte.
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.encode(), token.encode()):
        return web.json_response(
            {"error": "unauthorized", "message": "a valid bearer token is required"},
            status=401,
            headers={"WWW-Authenticate": 'Bearer realm="webhook-relay"'},
        )
    return await handler(request)


async def healthz(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    if relay.draining:
        return web.json_response({"status": "draining"}, status=503)
    try:
        ok = await relay.store.ping()
    except Exception:
        ok = False
    if not ok:
        return web.json_response({"status": "store_unavailable"}, status=503)
    return web.json_response({"status": "ready"})


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    body = generate_latest(relay.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


def build_admin_app(relay: Relay) -> web.Application:
    app = web.Application(middlewares=[require_token])
    app[RELAY] = relay
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    return app


_ = Relay
