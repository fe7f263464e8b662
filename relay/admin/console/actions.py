"""The console's forms: sign in and out, replay one event, replay dead letters.

Each change is shown before it is made (a preview, done and rolled back by the
store) and made by a POST that carries the session's CSRF token; the guard
refuses any other. Changes go to the audit log as the API's do.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from relay.admin.api import GONE, load_event, queued, requeue, with_body
from relay.admin.console.common import PREFIX, SESSION, STATE, render, set_cookie
from relay.admin.console.pages import held
from relay.admin.console.session import COOKIE
from relay.admin.control import STORE, audit, parse_reason
from relay.admin.door import THROTTLE, throttled
from relay.admin.views import only_params, parse_filter
from relay.logging import get_logger
from relay.runtime import RELAY
from relay.store.base import EventFilter

BULK_FIELDS: Final = ("route", "since", "until", "key")
log = get_logger()


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


# --- sign in and out ---------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//"):
        return value
    return f"{PREFIX}/"


async def login_page(request: web.Request) -> web.Response:
    if not request.config_dict[RELAY].config.admin.token_required:
        raise web.HTTPSeeOther(f"{PREFIX}/")
    nxt = _safe_next(request.rel_url.query.get("next"))
    return render(request, "login.html", {"next": nxt, "failed": False})


async def login(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    admin = relay.config.admin
    form = await _form(request)
    nxt = _safe_next(form.get("next"))
    if not admin.token_required:
        raise web.HTTPSeeOther(nxt)
    throttle = request.config_dict[THROTTLE]
    client = request.remote or "unknown"
    now = request.config_dict[STORE].clock()
    if (wait := throttle.wait(client, now)) > 0:
        return throttled(request, wait)
    holder = admin.holder(form.get("token", ""))
    if holder is None:
        relay.metrics.console_refused.labels("login").inc()
        if throttle.failed(client, now):
            log.warning("admin_guesses_throttled", client=client, where="console")
        log.warning("console_login_failed", client=client)
        return render(request, "login.html", {"next": nxt, "failed": True}, status=401)
    throttle.succeeded(client)
    signer = request.app[STATE].signer(admin)
    _, cookie = signer.issue(now, authed=True, label=holder.label, role=holder.role)
    log.info("console_login", client=client, token=holder.label, role=holder.role)
    resp = web.HTTPSeeOther(nxt)
    set_cookie(resp, cookie, request.secure)
    raise resp


async def logout(request: web.Request) -> web.Response:
    admin = request.config_dict[RELAY].config.admin
    if (session := request.get(SESSION)) is not None:
        # Server-side: a copy of the cookie (a shared screen, a proxy's log) dies too.
        request.app[STATE].signer(admin).revoke(session, request.config_dict[STORE].clock())
        log.info("console_logout", client=request.remote, token=session.label)
    resp = web.HTTPSeeOther(f"{PREFIX}/login")
    resp.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise resp


# --- replay one event ------------------------------------------------------------------


async def replay_page(request: web.Request) -> web.Response:
    store = request.config_dict[STORE]
    e = queued(await load_event(request))
    flt = EventFilter(ids=(e.id,))
    plain = await store.preview_requeue(flt)
    forced = await store.preview_requeue(flt, force=True)
    return render(
        request,
        "replay.html",
        {
            "e": e,
            "plain": plain.count,
            "forced": forced.count,
            "gone": GONE if e.body is None else "",
            "held": await held(request, e.route),
        },
    )


async def replay(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    store = request.config_dict[STORE]
    e = with_body(queued(await load_event(request)))
    form = await _form(request)
    force = form.get("force") == "1"
    reason = parse_reason(form, bulk=False)
    n = await requeue(relay, store, EventFilter(route=e.route, ids=(e.id,)), force=force)
    await audit(request, "replay", {"event_id": e.id, "force": force}, n, reason)
    raise web.HTTPSeeOther(f"{PREFIX}/events/{e.id}?{urlencode({'replayed': n})}")


# --- replay dead letters in bulk -----------------------------------------------------


def _bulk(values: dict[str, str], now: float) -> tuple[EventFilter, dict[str, str]]:
    only_params(values, {*BULK_FIELDS, "reason", "next"})
    given = {k: values[k] for k in BULK_FIELDS if values.get(k)}
    flt = parse_filter({**given, "state": "dead"}, now)
    return flt, given


async def dead_replay_page(request: web.Request) -> web.Response:
    store = request.config_dict[STORE]
    flt, given = _bulk(dict(request.rel_url.query), store.clock())
    preview = await store.preview_requeue(flt)
    return render(request, "dead_replay.html", {"preview": preview, "given": given})


async def dead_replay(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    store = request.config_dict[STORE]
    form = await _form(request)
    reason = parse_reason(form, bulk=True)
    flt, given = _bulk({k: v for k, v in form.items() if k != "reason"}, store.clock())
    n = await requeue(relay, store, flt, force=False)
    await audit(request, "replay_bulk", {**given, "state": "dead"}, n, reason)
    raise web.HTTPSeeOther(f"{PREFIX}/dead?{urlencode({**given, 'replayed': n})}")


def add_routes(app: web.Application) -> None:
    app.router.add_get("/login", login_page, name="login")
    app.router.add_post("/login", login)
    app.router.add_post("/logout", logout, name="logout")
    app.router.add_get("/events/{id}/replay", replay_page, name="replay")
    app.router.add_post("/events/{id}/replay", replay)
    app.router.add_get("/dead/replay", dead_replay_page, name="dead_replay")
    app.router.add_post("/dead/replay", dead_replay)
