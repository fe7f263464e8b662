"""The admin listener: /metrics, /healthz, /readyz and the inspection API (admin_api)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from relay.admin.api import add_api_routes, replica_state
from relay.admin.console.app import mount_console
from relay.admin.console.common import PREFIX as CONSOLE
from relay.admin.control import STORE, AdminStore, add_control_routes
from relay.admin.door import THROTTLE, edge, require_token
from relay.admin.export import add_export_routes
from relay.admin.rekey import add_rekey_routes
from relay.admin.throttle import Throttle
from relay.admin.views import ApiError
from relay.errors import StoreError
from relay.logging import get_logger
from relay.runtime import RELAY, Relay, unready

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# A scrape must answer even when the store is stuck: the gauges then keep their last values.
GAUGE_REFRESH_TIMEOUT: Final = 5.0

log = get_logger()


def _error(status: int, error: str, message: str) -> web.Response:
    return web.json_response({"error": error, "message": message}, status=status)


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as JSON ``{"error", "message"}``; never a traceback."""
    try:
        return await handler(request)
    except ApiError as exc:
        return _error(exc.status, exc.error, exc.message)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        slug = (exc.reason or "error").lower().replace(" ", "_")
        resp = _error(exc.status, slug, f"{exc.reason}: {request.method} {request.path}")
        if "Allow" in exc.headers:
            resp.headers["Allow"] = exc.headers["Allow"]
        return resp
    except StoreError as exc:
        log.error("admin_store_error", path=request.path, error=str(exc))
        return _error(503, "store_unavailable", f"the store failed: {exc}")
    except asyncio.CancelledError:
        raise
    except Exception as exc:
        log.error("admin_failed", path=request.path, error=repr(exc))
        return _error(500, "internal", "unexpected error; the relay's log has the details")


async def healthz(_request: web.Request) -> web.Response:
    return web.json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    if (why := await unready(relay, request.app[STORE].ping)) is not None:
        return web.json_response({"status": why}, status=503)
    body: dict[str, object] = {"status": "ready"}
    # Work left by a removed route does not make the relay unready, but is worth a look.
    if orphans := relay.metrics.orphans:
        body["orphaned_deliveries"] = sum(orphans.values())
        body["orphaned_routes"] = sorted({route for route, _ in orphans})
    return web.json_response(body)


async def refresh_gauges(relay: Relay, store: AdminStore) -> None:
    """The backlog gauges, from one cheap grouped count in the store."""
    backlog = await store.backlog()
    names = [rt.cfg.name for rt in relay.routes.values() if rt.cfg.queued]
    relay.metrics.set_backlog(backlog, names, store.clock())
    states = [replica_state(r, store.clock()) for r in await store.replicas()]
    for state in ("live", "dead"):
        relay.metrics.replicas.labels(state).set(states.count(state))


async def metrics(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    try:
        async with asyncio.timeout(GAUGE_REFRESH_TIMEOUT):
            await refresh_gauges(relay, request.app[STORE])
    except (StoreError, TimeoutError) as exc:
        log.warning("metrics_gauges_stale", error=str(exc) or type(exc).__name__)
    body = generate_latest(relay.metrics.registry)
    resp = web.Response(body=body)
    resp.headers["Content-Type"] = CONTENT_TYPE_LATEST
    return resp


async def to_console(_request: web.Request) -> web.Response:
    """The listener's root leads a browser to the console."""
    raise web.HTTPFound(f"{CONSOLE}/")


def build_admin_app(relay: Relay, store: AdminStore) -> web.Application:
    """The admin listener's app, on the process's runtime state and its full store."""
    app = web.Application(middlewares=[json_errors, edge, require_token])
    app[RELAY] = relay
    app[STORE] = store
    app[THROTTLE] = Throttle()
    relay.metrics.bind_store(store)
    relay.metrics.bind_disk(relay.disk)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/", to_console)
    add_api_routes(app)
    add_control_routes(app)
    add_rekey_routes(app)
    add_export_routes(app)
    mount_console(app, relay, store)
    return app
