"""The inspection API under /api/v1: list, show, replay and purge events; status.

Everything answers JSON. Errors are ``{"error": slug, "message": text}`` with
400, 404 or 409 (503 when the store fails); never a traceback. Stored request
headers are shown with their secrets redacted: signature headers,
Authorization, cookies, and anything named like a token or a secret.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from importlib import resources
from typing import Any, Final

from aiohttp import web

from relay import __version__
from relay.admin.control import (
    STORE,
    AdminStore,
    audit,
    breakers,
    parse_reason,
    pause_json,
    preview_json,
    read_json,
    store_of,
)
from relay.admin.views import (
    DEFAULT_LIMIT,
    FILTER_FIELDS,
    MAX_LIMIT,
    ApiError,
    delivery_json,
    event_detail,
    event_summary,
    is_empty_filter,
    iso,
    only_params,
    parse_filter,
    parse_flag,
    parse_int,
)
from relay.forward import shown_url
from relay.housekeeping import DEAD_AFTER, find_orphans
from relay.runtime import RELAY, Relay
from relay.store.base import EventFilter, EventInfo, ReplicaInfo


def route_secret_headers(relay: Relay, route: str) -> frozenset[str]:
    for rt in relay.routes.values():
        if rt.cfg.name == route and rt.scheme is not None:
            return frozenset({rt.scheme.signature_header.lower()})
    return frozenset()


def event_id_of(request: web.Request) -> int:
    text = request.match_info["id"]
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise ApiError(400, "bad_id", f"event id must be a positive integer, got {text!r}")
    return int(text)


async def load_event(request: web.Request) -> EventInfo:
    """The event the path names (``{id}``); 400 for a bad id, 404 for none."""
    event_id = event_id_of(request)
    event = await store_of(request).get_event(event_id)
    if event is None:
        raise ApiError(404, "not_found", f"no event {event_id}")
    return event


GONE: Final = (
    "its body is gone (dropped by storage.payload_retention or a storage cap), so it"
    " cannot be sent again; its key, times and attempts stay until their own retention"
)


def with_body(event: EventInfo) -> EventInfo:
    """410 for an event whose body was dropped: nothing is left to send."""
    if event.body is None:
        raise ApiError(410, "payload_gone", f"event {event.id}: {GONE}")
    return event


def queued(event: EventInfo) -> EventInfo:
    if event.sync_state is not None:
        raise ApiError(
            409,
            "not_queued",
            "a sync-mode event has no deliveries to replay: its sender's retry is forwarded afresh",
        )
    return event


async def requeue(relay: Relay, store: AdminStore, flt: EventFilter, *, force: bool) -> int:
    """Replay what ``flt`` matches (``force``: delivered deliveries too), and wake the
    routes it names (every route when it names none), which pace it as any delivery:
    rate limit and breaker."""
    n = await (store.requeue_all(flt) if force else store.requeue(flt))
    if n:
        for name in {flt.route} if flt.route else {rt.cfg.name for rt in relay.routes.values()}:
            relay.outbound.wake(name)
    return n


# --- handlers --------------------------------------------------------------------

_LIST_PARAMS: Final = frozenset({"route", "state", "key", "since", "until", "limit", "before_id"})


async def list_events(request: web.Request) -> web.Response:
    store = request.app[STORE]
    q = request.rel_url.query
    only_params(q, _LIST_PARAMS, name_them=True)
    flt = parse_filter({k: q[k] for k in FILTER_FIELDS if k in q}, store.clock())
    limit = parse_int("limit", q.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    before = parse_int("before_id", q["before_id"], 1) if "before_id" in q else None
    # One more than asked tells whether another page exists, without an empty last page.
    rows = await store.list_events(flt, limit + 1, before)
    page, more = rows[:limit], len(rows) > limit
    next_link = None
    if more:
        next_link = str(request.rel_url.update_query(before_id=str(page[-1].id)))
    return web.json_response(
        {
            "events": [event_summary(e) for e in page],
            "next": next_link,
            "next_before_id": page[-1].id if more else None,
        }
    )


async def show_event(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    event = await load_event(request)
    return web.json_response(event_detail(event, route_secret_headers(relay, event.route)))


def _route_active(relay: Relay, route: str) -> bool:
    return any(rt.cfg.name == route and rt.cfg.queued for rt in relay.routes.values())


async def replay_event(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    store = request.app[STORE]
    only_params(request.rel_url.query, {"force"})
    force = parse_flag("force", request.rel_url.query.get("force", "0"))
    event = with_body(queued(await load_event(request)))
    event_id = event.id
    reason = parse_reason(await read_json(request, ("reason",)), bulk=False)
    n = await requeue(relay, store, EventFilter(route=event.route, ids=(event_id,)), force=force)
    await audit(request, "replay", {"event_id": event_id, "force": force}, n, reason)
    after = await store.get_event(event_id)
    out: dict[str, Any] = {
        "event_id": event_id,
        "requeued": n,
        "force": force,
        "route_active": _route_active(relay, event.route),
        "deliveries": [delivery_json(d) for d in (after or event).deliveries],
    }
    if not n:
        out["message"] = (
            "nothing to replay: no delivery is dead, stale or filtered (force=1 replays delivered ones too)"
            if not force
            else "nothing to replay: every delivery is in flight"
        )
    elif not out["route_active"]:
        out["message"] = (
            f"route {event.route!r} is not configured for queue delivery: the event stays pending"
        )
    return web.json_response(out)


_BULK_FIELDS: Final = (*FILTER_FIELDS, "all")


async def replay_bulk(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    store = request.app[STORE]
    doc = await read_json(request, (*_BULK_FIELDS, "force", "preview", "reason"))
    flt = _bulk_filter(doc, store)
    force = parse_flag("force", doc.get("force", False))
    previewing = _previewing(request, doc)
    reason = parse_reason(doc, bulk=True, previewing=previewing)
    if previewing:
        preview = await store.preview_requeue(flt, force=force)
        return web.json_response({**preview_json(preview, "would_requeue"), "force": force})
    n = await requeue(relay, store, flt, force=force)
    await audit(request, "replay_bulk", {**_target(doc), "force": force}, n, reason)
    return web.json_response({"requeued": n, "force": force})


async def purge(request: web.Request) -> web.Response:
    store = request.app[STORE]
    doc = await read_json(request, (*_BULK_FIELDS, "preview", "reason"))
    flt = _bulk_filter(doc, store)
    previewing = _previewing(request, doc)
    reason = parse_reason(doc, bulk=True, previewing=previewing)
    if previewing:
        return web.json_response(preview_json(await store.preview_purge(flt), "would_purge"))
    n = await store.purge(flt)
    await audit(request, "purge", _target(doc), n, reason)
    return web.json_response({"purged": n})


def _previewing(request: web.Request, doc: Mapping[str, object]) -> bool:
    """``"preview": true`` in the body, or ``?preview=true``: count, change nothing."""
    # Both checked, whichever is given: a malformed one is an error, not ignored.
    in_body = parse_flag("preview", doc.get("preview", False))
    in_query = parse_flag("preview", request.rel_url.query.get("preview", "false"))
    return in_body or in_query


def _target(doc: Mapping[str, object]) -> dict[str, object]:
    """The filter as the operator gave it, for the audit log."""
    return {k: doc[k] for k in _BULK_FIELDS if k in doc}


def _bulk_filter(doc: Mapping[str, object], store: AdminStore) -> EventFilter:
    flt = parse_filter(doc, store.clock())
    everything = parse_flag("all", doc.get("all", False))
    if is_empty_filter(flt) and not everything:
        raise ApiError(
            400,
            "empty_filter",
            'name at least one of route, state, key, since, until, ids (or "all": true)',
        )
    return flt


async def status(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    store = request.app[STORE]
    now = store.clock()
    backlog = await store.backlog()
    orphans = await find_orphans(relay, store)
    relay.metrics.set_orphans(orphans)
    pauses = await store.pauses()
    routes = []
    for rt in relay.routes.values():
        b = backlog.get(rt.cfg.name)
        paused = [p for p in pauses if p.route == rt.cfg.name]
        routes.append(
            {
                "name": rt.cfg.name,
                "path": rt.cfg.path,
                "mode": rt.cfg.mode,
                "upstreams": [shown_url(u) for u in rt.cfg.upstreams],
                "pending": b.pending if b else 0,
                "in_flight": b.in_flight if b else 0,
                "dead": b.dead if b else 0,
                "oldest_open_age_seconds": round(now - b.oldest_open_at, 3)
                if b and b.oldest_open_at is not None
                else None,
                "paused": any(not p.upstream for p in paused),
                "paused_upstreams": sorted(shown_url(p.upstream) for p in paused if p.upstream),
            }
        )
    reload = relay.metrics.last_reload
    return web.json_response(
        {
            "version": __version__,
            "draining": relay.leaving or relay.draining,
            "store": store_state(relay, store),
            "routes": routes,
            "orphaned": [
                {"route": r, "upstream": shown_url(u), "deliveries": n}
                for (r, u), n in orphans.items()
            ],
            "pauses": [pause_json(p) for p in pauses],
            "breakers": breakers(relay),
            "last_reload": None
            if reload is None
            else {"ok": reload.ok, "at": iso(reload.at), "errors": list(reload.errors)},
        }
    )


def store_state(relay: Relay, store: AdminStore) -> dict[str, Any]:
    """How the store stands for space: its size and its disk's room (SQLite), whether a
    cap refuses new events, and whether it gives space back."""
    room = relay.disk.room()
    return {
        "size_bytes": None if room is None else room.store,
        "free_bytes": None if room is None else room.free,
        "disk_low": relay.disk.low(),
        "full": getattr(store, "full", None),
        "auto_vacuum": getattr(store, "auto_vacuum", None),
    }


def replica_state(r: ReplicaInfo, now: float) -> str:
    return "live" if now - r.heartbeat_at < DEAD_AFTER else "dead"


async def replicas(request: web.Request) -> web.Response:
    store = request.app[STORE]
    now = store.clock()
    return web.json_response(
        {
            "replicas": [
                {
                    "id": r.id,
                    "host": r.host,
                    "pid": r.pid,
                    "started": iso(r.started_at),
                    "heartbeat_age_seconds": round(now - r.heartbeat_at, 3),
                    "state": replica_state(r, now),
                    "leases": r.leases,
                    "this": r.id == store.replica_id,
                }
                for r in await store.replicas()
            ],
            "dead_after_seconds": DEAD_AFTER,
        }
    )


# The admin API described (OpenAPI 3.1), kept beside this module; tests check it
# against the routes and run schemathesis on it.
OPENAPI: Final = resources.files("relay.admin").joinpath("openapi.json")


async def openapi(_request: web.Request) -> web.Response:
    return web.Response(body=OPENAPI.read_bytes(), content_type="application/json")


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/openapi.json", openapi)
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/replicas", replicas)
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_get("/api/v1/events/{id}", show_event)
    app.router.add_post("/api/v1/events/{id}/replay", replay_event)
    app.router.add_post("/api/v1/replay", replay_bulk)
    app.router.add_post("/api/v1/purge", purge)
