"""The admin listener's door, before any handler: the Host and cross-site checks
(``relay.admin.edge``), the bearer token and its role, and the throttle on wrong
tokens (``relay.admin.throttle``). Every refusal is counted, logged once and
answered in a line of JSON."""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Final

from aiohttp import web

from relay.admin.console.common import PREFIX
from relay.admin.control import CREDENTIAL, OPERATES, STORE
from relay.admin.edge import SAFE_METHODS, allowed_names, cross_site_refusal, host_refusal
from relay.admin.throttle import Throttle
from relay.logging import get_logger
from relay.runtime import RELAY

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
# Probes must work without a token: container runtimes and load balancers have none.
OPEN_PATHS: Final = frozenset({"/healthz", "/readyz"})
# Wrong tokens per client, shared by the API and the console's login form.
THROTTLE: Final = web.AppKey("admin_throttle", Throttle)

log = get_logger()


def _is_console(path: str) -> bool:
    return path == PREFIX or path.startswith(f"{PREFIX}/")


def refused(request: web.Request, status: int, reason: str, message: str) -> web.Response:
    """A refusal at the door: counted, logged (the stranger's words escaped by the
    log's renderer), answered in a line."""
    request.config_dict[RELAY].metrics.admin_refused.labels(reason).inc()
    log.warning(
        "admin_refused",
        reason=reason,
        method=request.method,
        path=request.path,
        host=request.headers.get("Host"),
        origin=request.headers.get("Origin"),
        peer=request.remote,
    )
    return web.json_response({"error": reason, "message": message}, status=status)


def throttled(request: web.Request, wait: float) -> web.Response:
    resp = refused(request, 429, "throttled", "too many wrong tokens from this client")
    resp.headers["Retry-After"] = str(max(1, math.ceil(wait)))
    return resp


@web.middleware
async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
    """No answer to a foreign Host, no change from a web page (see ``relay.admin.edge``)."""
    if request.path in OPEN_PATHS:
        return await handler(request)
    admin = request.app[RELAY].config.admin
    names = allowed_names(admin.listen.host, admin.allowed_hosts)
    if (why := host_refusal(request.headers.get("Host"), names)) is not None:
        return refused(request, 403, "host", why)
    api = not _is_console(request.path)
    if (found := cross_site_refusal(request.method, request.headers, api=api)) is not None:
        reason, message = found
        return refused(request, 415 if reason == "content_type" else 403, reason, message)
    return await handler(request)


@web.middleware
async def require_token(request: web.Request, handler: Handler) -> web.StreamResponse:
    admin = request.app[RELAY].config.admin
    if _is_console(request.path):
        return await handler(request)  # the console asks for the token itself, once
    if not admin.token_required or request.path in OPEN_PATHS:
        request[CREDENTIAL] = "loopback"  # no token configured: the listener is loopback-only
        request[OPERATES] = True
        return await handler(request)
    throttle = request.app[THROTTLE]
    client = request.remote or "unknown"
    now = request.app[STORE].clock()
    if (wait := throttle.wait(client, now)) > 0:
        return throttled(request, wait)
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    holder = admin.holder(value) if scheme.lower() == "bearer" else None
    if holder is None:
        # No Authorization header at all is a misconfigured scraper, not a guess.
        if "Authorization" in request.headers and throttle.failed(client, now):
            log.warning("admin_guesses_throttled", client=client, where="api")
        resp = refused(request, 401, "unauthorized", "a valid bearer token is required")
        resp.headers["WWW-Authenticate"] = 'Bearer realm="webhook-relay"'
        return resp
    throttle.succeeded(client)
    if request.method not in SAFE_METHODS and not holder.operates:
        return refused(
            request, 403, "role", f"token {holder.label!r} may only read; this needs operate"
        )
    request[CREDENTIAL] = holder.label
    request[OPERATES] = holder.operates
    return await handler(request)
