"""The console as a sub-app of the admin listener, mounted at /ui: its templates,
static files, session and CSRF checks, security headers and HTML errors.

The admin app's bearer-token check skips /ui: a browser cannot send that header
on a link, so the console asks for the token once (``/ui/login``) and keeps a
signed, HttpOnly, SameSite=Strict cookie. Every POST must carry the session's
CSRF token, loopback included: a page on any other site could otherwise make
the operator's browser replay dead letters.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import suppress
from pathlib import Path
from typing import Final
from urllib.parse import urlencode

import aiohttp_jinja2
import jinja2
from aiohttp import web

from relay.admin.console import actions, pages
from relay.admin.console.common import PREFIX, SESSION, STATE, ConsoleState, error_page, set_cookie
from relay.admin.console.history import History
from relay.admin.console.session import COOKIE
from relay.admin.console.tail import add_tail_routes
from relay.admin.console.views import age, when
from relay.admin.control import CREDENTIAL, STORE, AdminStore
from relay.admin.views import ApiError, shown_key
from relay.errors import StoreError
from relay.forward import shown_url
from relay.logging import get_logger
from relay.runtime import RELAY, Relay

HERE: Final = Path(__file__).parent
# No inline script, no framing, nothing from elsewhere: a stranger's body that
# slipped past escaping still could not run.
CSP: Final = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:;"
    " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none';"
    " object-src 'none'"
)
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
# How often the overview's per-minute counts are sampled when nobody is looking.
SAMPLE_EVERY: Final = 10.0

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
log = get_logger()


def _is_open(path: str) -> bool:
    return path.startswith(f"{PREFIX}/static/") or path == f"{PREFIX}/login"


def refuse(request: web.Request, reason: str, status: int, message: str) -> web.Response:
    request.config_dict[RELAY].metrics.console_refused.labels(reason).inc()
    log.warning("console_refused", reason=reason, path=request.path, method=request.method)
    return error_page(request, status, message)


@web.middleware
async def guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Session, CSRF and headers for every console request; errors as pages."""
    try:
        resp = await _guarded(request, handler)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        resp = error_page(request, exc.status, exc.reason or "error")
    except ApiError as exc:
        resp = error_page(request, exc.status, exc.message)
    except StoreError as exc:
        log.error("console_store_error", path=request.path, error=str(exc))
        resp = error_page(request, 503, f"the store failed: {exc}")
    resp.headers.update(SECURITY_HEADERS)
    return resp


async def _guarded(request: web.Request, handler: Handler) -> web.StreamResponse:
    relay = request.config_dict[RELAY]
    admin = relay.config.admin
    signer = request.app[STATE].signer(admin)
    now = request.config_dict[STORE].clock()
    session = signer.read(request.cookies.get(COOKIE), now)
    if request.path.startswith(f"{PREFIX}/static/"):
        return await handler(request)
    fresh: str | None = None
    if session is None and request.method == "GET":
        # A first visit, or an expired session: a new one, signed in only where no
        # token is asked for (the listener is then loopback-only).
        open_door = not admin.token_required
        session, fresh = signer.issue(
            now, authed=open_door, label="loopback", role="operate" if open_door else ""
        )
    if request.method == "POST":
        form = await request.post()
        given = form.get("csrf")
        if not signer.csrf_ok(session, given if isinstance(given, str) else None):
            return refuse(request, "csrf", 403, "this form has expired or came from elsewhere")
    assert session is not None  # a POST without one was refused just above
    if not session.authed and not _is_open(request.path):
        if request.method == "GET" and not request.path.endswith(".json"):
            raise web.HTTPSeeOther(f"{PREFIX}/login?{_next(request)}")
        return refuse(request, "session", 401, "sign in first")
    # A read token browses; signing out is its only change.
    may_change = session.role == "operate" or _is_open(request.path)
    if request.method == "POST" and not may_change and request.path != f"{PREFIX}/logout":
        return refuse(request, "role", 403, f"token {session.label!r} may only read")
    request[SESSION] = session
    request[CREDENTIAL] = session.label if admin.token_required else "loopback"
    resp = await handler(request)
    if fresh is not None:
        set_cookie(resp, fresh, request.secure)
    return resp


def _next(request: web.Request) -> str:

    return urlencode({"next": str(request.rel_url)})


async def _sample(app: web.Application) -> AsyncIterator[None]:
    async def loop() -> None:
        while True:
            try:
                pages.sample_counts(app)
            except Exception as exc:  # a view aid: never worth stopping the relay for
                log.warning("console_history_failed", error=repr(exc))
            await asyncio.sleep(SAMPLE_EVERY)

    task = asyncio.create_task(loop(), name="console_history")
    yield
    task.cancel()
    with suppress(asyncio.CancelledError):
        await task


def build_console(relay: Relay, store: AdminStore) -> web.Application:
    app = web.Application(middlewares=[guard])
    app[STATE] = ConsoleState(history=History(start=store.clock()))
    app[RELAY] = relay
    app[STORE] = store
    env = aiohttp_jinja2.setup(
        app,
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,  # every template, whatever its name
        undefined=jinja2.StrictUndefined,
    )
    env.filters.update(
        iso=when,  # the API's UTC time, and how long ago: what an operator reads first
        age=age,
        url=shown_url,
        key=lambda k: shown_key(k)[0],
        is_shadow=lambda k: shown_key(k)[1],
    )
    env.globals.update(prefix=PREFIX)
    pages.add_routes(app)
    add_tail_routes(app)
    actions.add_routes(app)
    app.router.add_static("/static/", HERE / "static", name="static")
    app.cleanup_ctx.append(_sample)
    return app


def mount_console(admin: web.Application, relay: Relay, store: AdminStore) -> None:
    """The console under /ui of the admin app (``/ui`` itself redirects to ``/ui/``)."""

    async def to_index(_request: web.Request) -> web.StreamResponse:
        raise web.HTTPPermanentRedirect(f"{PREFIX}/")

    admin.router.add_get(PREFIX, to_index)
    admin.add_subapp(PREFIX, build_console(relay, store))
