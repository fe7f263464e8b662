"""The console's forms: sign in and out, replay one event, replay dead letters.

Each change is shown before it is made (a preview, done and rolled back by the
store) and made by a POST that carries the session's CSRF token; the guard
refuses any other. Changes go to the audit log as the API's do.
"""

from __future__ import annotations

import hmac
from typing import Final
from urllib.parse import urlencode

from aiohttp import web

from relay.admin.control import MAX_REASON, STORE, audit
from relay.admin.views import ApiError, parse_filter
from relay.console.common import PREFIX, STATE, render, set_cookie
from relay.console.pages import load_event
from relay.console.session import COOKIE
from relay.logging import get_logger
from relay.runtime import RELAY
from relay.store.base import EventFilter

BULK_FIELDS: Final = ("route", "since", "until", "key")
log = get_logger()


async def _form(request: web.Request) -> dict[str, str]:
    form = await request.post()
    return {k: v for k, v in form.items() if isinstance(v, str) and k != "csrf"}


def _reason(form: dict[str, str], required: bool) -> str | None:
    reason = form.get("reason", "").strip()
    if len(reason) > MAX_REASON:
        raise ApiError(400, "bad_reason", f"a reason is at most {MAX_REASON} characters")
    if required and not reason:
        raise ApiError(400, "reason_required", "say why: the reason goes to the audit log")
    return reason or None


# --- sign in and out ---------------------------------------------------------------


def _safe_next(value: str | None) -> str:
    """Only a console path: never an open redirect to another site."""
    if value and value.startswith(f"{PREFIX}/") and not value.startswith("//"):
        return value
    return f"{PREFIX}/"


async def login_page(request: web.Request) -> web.Response:
    token = request.config_dict[RELAY].config.admin.token
    if token is None:
        raise web.HTTPSeeOther(f"{PREFIX}/")
    nxt = _safe_next(request.rel_url.query.get("next"))
    return render(request, "login.html", {"next": nxt, "failed": False})


async def login(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    token = relay.config.admin.token
    form = await _form(request)
    nxt = _safe_next(form.get("next"))
    if token is None:
        raise web.HTTPSeeOther(nxt)
    given = form.get("token", "")
    if not hmac.compare_digest(given.encode(), token.encode()):
        relay.metrics.console_refused.labels("login").inc()
        log.warning("console_login_failed", client=request.remote)
        return render(request, "login.html", {"next": nxt, "failed": True}, status=401)
    signer = request.app[STATE].signer(token)
    _, cookie = signer.issue(request.config_dict[STORE].clock(), authed=True)
    log.info("console_login", client=request.remote)
    resp = web.HTTPSeeOther(nxt)
    set_cookie(resp, cookie, request.secure)
    raise resp


async def logout(request: web.Request) -> web.Response:
    resp = web.HTTPSeeOther(f"{PREFIX}/login")
    resp.del_cookie(COOKIE, path=f"{PREFIX}/")
    raise resp


# --- replay one event ------------------------------------------------------------------


async def replay_page(request: web.Request) -> web.Response:
    store = request.config_dict[STORE]
    e = await load_event(request)
    if e.sync_state is not None:
        raise ApiError(409, "not_queued", "a sync-mode event has no deliveries to replay")
    flt = EventFilter(ids=(e.id,))
    plain = await store.preview_requeue(flt)
    forced = await store.preview_requeue(flt, force=True)
    return render(
        request,
        "replay.html",
        {"e": e, "plain": plain.count, "forced": forced.count, "dropped": e.body is None},
    )


async def replay(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    store = request.config_dict[STORE]
    e = await load_event(request)
    if e.sync_state is not None:
        raise ApiError(409, "not_queued", "a sync-mode event has no deliveries to replay")
    form = await _form(request)
    force = form.get("force") == "1"
    reason = _reason(form, required=False)
    flt = EventFilter(ids=(e.id,))
    n = await (store.requeue_all(flt) if force else store.requeue(flt))
    if n:
        relay.wake(e.route)
    await audit(request, "replay", {"event_id": e.id, "force": force}, n, reason)
    raise web.HTTPSeeOther(f"{PREFIX}/events/{e.id}?{urlencode({'replayed': n})}")


# --- replay dead letters in bulk -----------------------------------------------------


def _bulk(values: dict[str, str], now: float) -> tuple[EventFilter, dict[str, str]]:
    unknown = sorted(set(values) - {*BULK_FIELDS, "reason", "next"})
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
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
    reason = _reason(form, required=True)
    flt, given = _bulk({k: v for k, v in form.items() if k != "reason"}, store.clock())
    n = await store.requeue(flt)
    if n:
        # Paced like any delivery: by the routes' rate limits and breakers.
        for name in {flt.route} if flt.route else {rt.cfg.name for rt in relay.routes.values()}:
            relay.wake(name)
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
