"""The console's pages (GET): overview, events, one event, dead letters, live tail."""

from __future__ import annotations

import json
import re
from collections import Counter
from typing import Any, Final
from urllib.parse import urlencode

from aiohttp import web

from relay.admin.api import load_event, route_secret_headers
from relay.admin.console.common import STATE, render
from relay.admin.console.history import History, sparkline
from relay.admin.console.views import field_matches, last_errors, route_row, show_bytes
from relay.admin.control import STORE, breakers
from relay.admin.views import (
    DEFAULT_LIMIT,
    FILTER_FIELDS,
    ApiError,
    event_detail,
    event_state,
    iso,
    only_params,
    parse_filter,
    parse_int,
)
from relay.disk import DiskSpace, threshold
from relay.forward import shown_url
from relay.runtime import RELAY, Relay
from relay.store.base import EventInfo

# A field search reads this many events per page at most, newest first, and
# offers to go on from where it stopped: a page never scans the whole store.
SCAN: Final = 500
# The overview's "last error" is the newest failure among this many attempts.
RECENT: Final = 500
# The overview's columns, and the outcomes each sums: a sync route forwards and
# replays where a queue route accepts and absorbs, and both take webhooks.
COLUMNS: Final = {
    "accepted": ("accepted", "forwarded"),
    "duplicate": ("duplicate", "replayed"),
    "rejected": ("rejected",),
    "delivered": ("attempt:delivered",),
    "failed": ("attempt:retry", "attempt:dead"),
}
_EVENT_PARAMS: Final = frozenset(
    {*FILTER_FIELDS, "field", "value", "before_id", "limit", "replayed"}
) - {"ids"}
# The audit entries an event page reads for its replays (newest first).
AUDIT_SCAN: Final = 100
_FIELD: Final = re.compile(r"[A-Za-z0-9_\-]+(\.[A-Za-z0-9_\-]+)*")


def summed(history: History, route: str, outcomes: tuple[str, ...], now: float) -> list[int | None]:
    """The per-minute counts of several outcomes, added minute by minute."""
    lines = [history.per_minute((route, o), now) for o in outcomes]
    return [
        None if all(v is None for v in minute) else sum(v or 0 for v in minute)
        for minute in zip(*lines, strict=True)
    ]


def received_totals(relay: Relay) -> dict[tuple[str, str], float]:
    """relay_webhooks_received_total by (route, outcome), workers' included."""
    return totals(relay, "relay_webhooks_received", "outcome")


def totals(
    relay: Relay, family_name: str, label: str, prefix: str = ""
) -> dict[tuple[str, str], float]:
    """A counter family's totals by (route, ``label``), its other labels added up."""
    out: dict[tuple[str, str], float] = {}
    for family in relay.metrics.registry.collect():
        if family.name == family_name:
            for s in family.samples:
                if s.name.endswith("_total"):
                    key = (s.labels["route"], prefix + s.labels[label])
                    out[key] = out.get(key, 0.0) + s.value
    return out


def observed(relay: Relay) -> dict[tuple[str, str], float]:
    """What the overview's lines follow: webhooks by outcome, attempts by result."""
    attempts = totals(relay, "relay_delivery_attempts", "result", prefix="attempt:")
    return received_totals(relay) | attempts


def sample_counts(app: web.Application) -> None:
    app[STATE].history.observe(app[STORE].clock(), observed(app[RELAY]))


# --- overview ----------------------------------------------------------------------


async def overview(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    store = request.config_dict[STORE]
    now = store.clock()
    history = request.app[STATE].history
    history.observe(now, observed(relay))
    backlog = await store.backlog()
    counts = {(c.route, c.upstream): c for c in await store.upstream_counts()}
    pauses = await store.pauses()
    errors = last_errors(await store.recent_attempts(0, RECENT))
    open_breakers = {(b["route"], b["upstream"]): b for b in breakers(relay)}
    rows = [
        route_row(
            name=rt.cfg.name,
            path=rt.cfg.path,
            mode=rt.cfg.mode,
            queued=rt.cfg.queued,
            upstreams=rt.cfg.served,
            backlog=backlog.get(rt.cfg.name),
            counts=counts,
            pauses=pauses,
            breakers=open_breakers,
            errors=errors,
            now=now,
            sparks={
                column: sparkline(summed(history, rt.cfg.name, outcomes, now))
                for column, outcomes in COLUMNS.items()
            },
        )
        for rt in relay.routes.values()
    ]
    return render(
        request,
        "overview.html",
        {
            "routes": rows,
            "now": now,
            "draining": relay.leaving or relay.draining,
            "disk": disk_line(relay.disk),
            "notices": await store.notices_recent(10) if relay.config.notify else [],
        },
    )


def disk_line(disk: DiskSpace) -> dict[str, Any] | None:
    """The store's size and its disk's room, for a SQLite store."""
    room = disk.room()
    if room is None:
        return None
    floor = threshold(disk.min_bytes, disk.min_ratio, room.total)
    return {
        "store": mib(room.store),
        "free": mib(room.free),
        "min_free": mib(floor),
        "low": room.free < floor,
    }


def mib(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


# --- events --------------------------------------------------------------------------


def query(request: web.Request, allowed: frozenset[str]) -> dict[str, str]:
    """The query without empty fields (a filter form sends every field)."""
    q = {k: v for k, v in request.rel_url.query.items() if v != ""}
    only_params(q, allowed)
    return q


def _row(e: EventInfo) -> dict[str, Any]:
    return {"event": e, "state": event_state(e)}


async def events(request: web.Request) -> web.Response:
    return await _event_list(request, "events.html", None)


async def dead(request: web.Request) -> web.Response:
    return await _event_list(request, "dead.html", "dead")


async def _event_list(request: web.Request, template: str, state: str | None) -> web.Response:
    store = request.config_dict[STORE]
    allowed = _EVENT_PARAMS - {"state"} if state else _EVENT_PARAMS
    q = query(request, allowed)
    values: dict[str, object] = {k: q[k] for k in FILTER_FIELDS if k in q}
    if state:
        values["state"] = state
    flt = parse_filter(values, store.clock())
    limit = parse_int("limit", q.get("limit", str(DEFAULT_LIMIT)), 1, 200)
    before = parse_int("before_id", q["before_id"], 1) if "before_id" in q else None
    path, value = q.get("field"), q.get("value")
    if (path is None) != (value is None):
        raise ApiError(
            400, "bad_filter", "field and value go together: data.object.id and its value"
        )
    if path is not None and not _FIELD.fullmatch(path):
        raise ApiError(400, "bad_filter", "field: a dotted path of names, like data.object.id")
    searched = None
    if path is not None and value is not None:
        scanned = await store.list_events(flt, SCAN, before)
        page = [e for e in scanned if field_matches(e.body, path, value)][:limit]
        more = len(scanned) == SCAN
        cursor = scanned[-1].id if more else None
        searched = {"count": len(scanned), "from": scanned[0].id if scanned else None, "to": cursor}
    else:
        rows = await store.list_events(flt, limit + 1, before)
        page, more = rows[:limit], len(rows) > limit
        cursor = page[-1].id if more else None
    next_url = str(request.rel_url.update_query(before_id=str(cursor))) if cursor else None
    api = {k: v for k, v in q.items() if k in (*FILTER_FIELDS, "limit", "before_id")}
    if state:
        api["state"] = state
    return render(
        request,
        template,
        {
            "rows": [_row(e) for e in page],
            "q": q,
            "next_url": next_url,
            "searched": searched,
            "api_url": "/api/v1/events" + (f"?{urlencode(api)}" if api else ""),
            "routes": sorted(rt.cfg.name for rt in request.config_dict[RELAY].routes.values()),
            "states": ("pending", "in_flight", "delivered", "dead", "stale", "filtered"),
            "replayed": request.rel_url.query.get("replayed"),
        },
    )


async def event(request: web.Request) -> web.Response:
    relay = request.config_dict[RELAY]
    e = await load_event(request)
    detail = event_detail(e, route_secret_headers(relay, e.route))
    upstream_of = {d.id: d.upstream for d in e.deliveries}
    tried = Counter(a.delivery_id for a in e.attempts)
    attempts = [
        {
            "a": a,
            "number": n,
            "upstream": upstream_of.get(a.delivery_id, "?"),
            "answer": show_bytes(a.answer),
            "ok": a.error is None and a.status is not None and a.status < 400,
        }
        for n, a in enumerate(e.attempts, 1)
    ]
    return render(
        request,
        "event.html",
        {
            "e": e,
            "d": detail,
            "state": event_state(e),
            "body": show_bytes(e.body),
            "attempts": attempts,
            "replayed": request.rel_url.query.get("replayed"),
            "held": await held(request, e.route),
            "tried": tried,
            "story": await story(request, e, attempts),
        },
    )


async def story(
    request: web.Request, e: EventInfo, attempts: list[dict[str, Any]]
) -> list[dict[str, Any]]:
    """The event's life in one timeline, oldest first: received, its duplicates, each
    attempt, each replay (from the audit log: when, by which credential, why), and
    the answer kept for its duplicates (sync and hybrid)."""
    store = request.config_dict[STORE]
    out: list[dict[str, Any]] = [{"at": e.received_at, "kind": "received", "text": "received"}]
    if e.duplicates:
        copies = "copy" if e.duplicates == 1 else "copies"
        out.append(
            {
                "at": e.first_duplicate_at or e.last_seen_at,
                "kind": "duplicate",
                "text": f"{e.duplicates} later {copies} of the key (the last at"
                f" {iso(e.last_seen_at)}), {e.mismatches} with another body",
            }
        )
    out += [{"at": t["a"].started_at, "kind": "attempt", "t": t} for t in attempts]
    for entry in await store.audit_log(AUDIT_SCAN):
        target = json.loads(entry.target)
        if entry.action == "replay" and target.get("event_id") == e.id:
            forced = " (forced: delivered ones too)" if target.get("force") else ""
            why = f": {entry.reason}" if entry.reason else ""
            out.append(
                {
                    "at": entry.at,
                    "kind": "replay",
                    "text": f"replayed by {entry.credential}{forced}{why}; {entry.affected}"
                    f" {'delivery' if entry.affected == 1 else 'deliveries'} back to pending",
                }
            )
    answer = await store.stored_answer(e.id) if e.sync_state or _hybrid(request, e) else None
    if answer is not None:
        out.append(
            {
                "at": e.last_seen_at,
                "kind": "answer",
                "text": f"kept answer: HTTP {answer.status}, returned to its duplicates",
                "answer": show_bytes(answer.body),
            }
        )
    return sorted(out, key=lambda item: (item["at"], item["kind"] == "answer"))


def _hybrid(request: web.Request, e: EventInfo) -> bool:
    relay = request.config_dict[RELAY]
    return any(rt.cfg.name == e.route and rt.cfg.mode == "hybrid" for rt in relay.routes.values())


async def held(request: web.Request, route: str) -> list[str]:
    """Why the route's deliveries wait now, in words: a pause, an open breaker."""
    relay, store = request.config_dict[RELAY], request.config_dict[STORE]
    out = []
    for p in await store.pauses():
        if p.route == route:
            what = f"upstream {shown_url(p.upstream)}" if p.upstream else f"route {route}"
            why = f" ({p.reason})" if p.reason else ""
            out.append(f"{what} is paused{why}: its deliveries wait until it is resumed")
    for b in breakers(relay):
        if b["route"] == route:
            out.append(
                f"the breaker for {b['upstream']} is {b['state'].replace('_', '-')}:"
                " deliveries to it wait for its probe"
            )
    return out


def add_routes(app: web.Application) -> None:
    app.router.add_get("/", overview, name="overview")
    app.router.add_get("/events", events, name="events")
    app.router.add_get("/events/{id}", event, name="event")
    app.router.add_get("/dead", dead, name="dead")
