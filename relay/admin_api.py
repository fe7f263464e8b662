"""The inspection API under /api/v1: list, show, replay and purge events; status.

Everything answers JSON. Errors are ``{"error": slug, "message": text}`` with
400, 404 or 409 (503 when the store fails); never a traceback. Stored request
headers are shown with their secrets redacted: signature headers,
Authorization, cookies, and anything named like a token or a secret.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final
from urllib.parse import parse_qsl, urlencode

from aiohttp import web

from relay import __version__, signatures
from relay.runtime import RELAY, Relay
from relay.store.base import (
    DELIVERY_STATES,
    AttemptInfo,
    DeliveryInfo,
    EventFilter,
    EventInfo,
)
from relay.validate import parse_duration

DEFAULT_LIMIT: Final = 50
# list_events loads each event's body: a page stays small.
MAX_LIMIT: Final = 200
MAX_IDS: Final = 1000
PREVIEW_CHARS: Final = 4096
REDACTED: Final = "[redacted]"

# Headers that carry credentials or signatures, whatever the route's config says.
_SECRET_HEADERS: Final = frozenset(
    h.lower()
    for h in (
        *signatures.DEFAULT_HEADERS.values(),
        "Authorization",
        "Proxy-Authorization",
        "Cookie",
        "Set-Cookie",
        "X-Hub-Signature",
    )
)
_SECRET_NAME: Final = re.compile(
    r"signature|secret|token|auth|passw|api[-_]?key|cookie|credential|hmac|session", re.I
)
# Query parameters are redacted by the same pattern plus these short names.
_SECRET_PARAMS: Final = frozenset({"key", "sig", "code", "pass", "pwd"})


class ApiError(Exception):
    def __init__(self, status: int, error: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.error = error
        self.message = message


# --- redaction and rendering ---------------------------------------------------


def secret_header(name: str, extra: frozenset[str] = frozenset()) -> bool:
    low = name.lower()
    return low in _SECRET_HEADERS or low in extra or _SECRET_NAME.search(low) is not None


def redact_headers(
    headers: tuple[tuple[str, str], ...], extra: frozenset[str] = frozenset()
) -> list[list[str]]:
    return [[name, REDACTED if secret_header(name, extra) else value] for name, value in headers]


def redact_query(query: str) -> str:
    if not query:
        return ""
    pairs = parse_qsl(query, keep_blank_values=True)
    out = [
        (k, REDACTED if k.lower() in _SECRET_PARAMS or _SECRET_NAME.search(k) else v)
        for k, v in pairs
    ]
    return urlencode(out, safe="[]")


def iso(t: float | None) -> str | None:
    if t is None:
        return None
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_state(e: EventInfo) -> str:
    """One word for the event: its most urgent delivery's state (or the sync state)."""
    if e.sync_state is not None:
        return e.sync_state
    states = {d.state for d in e.deliveries}
    for s in ("in_flight", "pending", "dead", "stale", "delivered"):
        if s in states:
            return s
    return "none"


def delivery_json(d: DeliveryInfo) -> dict[str, Any]:
    return {
        "id": d.id,
        "upstream": d.upstream,
        "state": d.state,
        "attempts": d.attempts,
        "next_attempt_at": iso(d.next_attempt_at) if d.state == "pending" else None,
        "last_status": d.last_status,
        "last_error": d.last_error,
        "reason": d.reason,
        "updated_at": iso(d.updated_at),
    }


def attempt_json(a: AttemptInfo) -> dict[str, Any]:
    return {
        "delivery_id": a.delivery_id,
        "started_at": iso(a.started_at),
        "duration_ms": round(a.duration_ms, 3),
        "status": a.status,
        "error": a.error,
    }


def event_summary(e: EventInfo) -> dict[str, Any]:
    return {
        "id": e.id,
        "route": e.route,
        "key": e.key,
        "key_source": e.key_source,
        "state": event_state(e),
        "mode": "queue" if e.sync_state is None else "sync",
        "received_at": iso(e.received_at),
        "last_seen_at": iso(e.last_seen_at),
        "duplicates": e.duplicates,
        "mismatches": e.mismatches,
        "body_size": None if e.body is None else len(e.body),
        "deliveries": [delivery_json(d) for d in e.deliveries],
    }


def _dedupe_note(e: EventInfo) -> str:
    if not e.duplicates:
        return f"first and only delivery of key {e.key!r} ({e.key_source})"
    note = (
        f"{e.duplicates} later request(s) carried key {e.key!r} ({e.key_source})"
        " and were absorbed as duplicates"
    )
    if e.mismatches:
        note += f"; {e.mismatches} of them had a different body (payload mismatch)"
    return note


def event_detail(e: EventInfo, extra_secret_headers: frozenset[str]) -> dict[str, Any]:
    out = event_summary(e)
    body: dict[str, Any] = {"dropped": e.body is None, "size": out["body_size"]}
    if e.body is not None:
        body["base64"] = base64.b64encode(e.body).decode("ascii")
        try:
            text = e.body.decode("utf-8")
        except UnicodeDecodeError:
            body["preview"] = None
            body["preview_truncated"] = False
        else:
            body["preview"] = text[:PREVIEW_CHARS]
            body["preview_truncated"] = len(text) > PREVIEW_CHARS
    out.update(
        fingerprint=e.fingerprint,
        method=e.method,
        path=e.path,
        query=redact_query(e.query),
        headers=redact_headers(e.headers, extra_secret_headers),
        body=body,
        sync_state=e.sync_state,
        dedupe={
            "key": e.key,
            "key_source": e.key_source,
            "fingerprint": e.fingerprint,
            "duplicates": e.duplicates,
            "mismatches": e.mismatches,
            "explanation": _dedupe_note(e),
        },
        attempts=[attempt_json(a) for a in e.attempts],
    )
    return out


def _route_secret_headers(relay: Relay, route: str) -> frozenset[str]:
    for rt in relay.routes.values():
        if rt.cfg.name == route and rt.scheme is not None:
            return frozenset({rt.scheme.signature_header.lower()})
    return frozenset()


# --- filters ---------------------------------------------------------------------


def parse_time(name: str, value: object, now: float) -> float:
    """UNIX seconds, an RFC 3339 time, or a duration ago ("30m": thirty minutes ago)."""
    if isinstance(value, bool):
        raise ApiError(400, "bad_filter", f"{name}: expected a time, got {value!r}")
    if isinstance(value, int | float):
        t = float(value)
    elif isinstance(value, str):
        text = value.strip()
        try:
            t = float(text)
        except ValueError:
            try:
                t = now - parse_duration(text)
            except ValueError:
                try:
                    dt = datetime.fromisoformat(text)
                except ValueError:
                    raise ApiError(
                        400,
                        "bad_filter",
                        f"{name}: expected UNIX seconds, an RFC 3339 time"
                        f" or a duration ago like 30m, got {text!r}",
                    ) from None
                t = (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp()
    else:
        raise ApiError(400, "bad_filter", f"{name}: expected a time, got {type(value).__name__}")
    if not math.isfinite(t):
        raise ApiError(400, "bad_filter", f"{name}: not a finite time")
    return t


def _int(name: str, value: object, low: int, high: int | None = None) -> int:
    if isinstance(value, bool):
        raise ApiError(400, "bad_request", f"{name}: expected an integer, got {value!r}")
    if isinstance(value, str) and re.fullmatch(r"[0-9]+", value.strip()):
        value = int(value)
    if not isinstance(value, int) or value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f"at least {low}"
        raise ApiError(400, "bad_request", f"{name}: expected an integer {bounds}, got {value!r}")
    return value


def _flag(name: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in (
        "1",
        "true",
        "yes",
        "on",
        "0",
        "false",
        "no",
        "off",
        "",
    ):
        return value.lower() in ("1", "true", "yes", "on")
    raise ApiError(400, "bad_request", f"{name}: expected true or false, got {value!r}")


FILTER_FIELDS: Final = ("route", "state", "key", "since", "until", "ids")


def parse_filter(values: Mapping[str, object], now: float) -> EventFilter:
    route = values.get("route")
    key = values.get("key")
    for name, v in (("route", route), ("key", key)):
        if v is not None and (not isinstance(v, str) or not v):
            raise ApiError(400, "bad_filter", f"{name}: expected a non-empty string")
    state = values.get("state")
    if state is not None and state not in DELIVERY_STATES:
        raise ApiError(
            400, "bad_filter", f"state: expected one of {', '.join(DELIVERY_STATES)}, got {state!r}"
        )
    since = values.get("since")
    until = values.get("until")
    ids = values.get("ids")
    id_tuple: tuple[int, ...] | None = None
    if ids is not None:
        if not isinstance(ids, list) or len(ids) > MAX_IDS:
            raise ApiError(400, "bad_filter", f"ids: expected a list of at most {MAX_IDS} ids")
        id_tuple = tuple(_int("ids[]", i, 1) for i in ids)
    return EventFilter(
        route=route if isinstance(route, str) else None,
        state=state,  # narrowed by the membership test above
        key=key if isinstance(key, str) else None,
        since=None if since is None else parse_time("since", since, now),
        until=None if until is None else parse_time("until", until, now),
        ids=id_tuple,
    )


def _empty(flt: EventFilter) -> bool:
    return flt == EventFilter()


async def _json_body(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    raw = await request.read()
    if not raw.strip():
        return {}
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "bad_json", f"the body is not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ApiError(400, "bad_json", "the body must be a JSON object")
    unknown = sorted(set(doc) - set(allowed))
    if unknown:
        raise ApiError(
            400,
            "unknown_field",
            f"unknown field(s): {', '.join(unknown)}; expected {', '.join(allowed)}",
        )
    return doc


def _event_id(request: web.Request) -> int:
    text = request.match_info["id"]
    if not re.fullmatch(r"[0-9]{1,18}", text):
        raise ApiError(400, "bad_id", f"event id must be a positive integer, got {text!r}")
    return int(text)


# --- handlers --------------------------------------------------------------------

_LIST_PARAMS: Final = frozenset({"route", "state", "key", "since", "until", "limit", "before_id"})


async def list_events(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    q = request.rel_url.query
    unknown = sorted(set(q) - _LIST_PARAMS)
    if unknown:
        raise ApiError(
            400,
            "unknown_parameter",
            f"unknown parameter(s): {', '.join(unknown)}; expected {', '.join(sorted(_LIST_PARAMS))}",
        )
    flt = parse_filter({k: q[k] for k in FILTER_FIELDS if k in q}, relay.store.clock())
    limit = _int("limit", q.get("limit", str(DEFAULT_LIMIT)), 1, MAX_LIMIT)
    before = _int("before_id", q["before_id"], 1) if "before_id" in q else None
    # One more than asked tells whether another page exists, without an empty last page.
    rows = await relay.store.list_events(flt, limit + 1, before)
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
    event_id = _event_id(request)
    event = await relay.store.get_event(event_id)
    if event is None:
        raise ApiError(404, "not_found", f"no event {event_id}")
    return web.json_response(event_detail(event, _route_secret_headers(relay, event.route)))


def _route_active(relay: Relay, route: str) -> bool:
    return any(rt.cfg.name == route and rt.cfg.mode == "queue" for rt in relay.routes.values())


async def replay_event(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    event_id = _event_id(request)
    unknown = sorted(set(request.rel_url.query) - {"force"})
    if unknown:
        raise ApiError(400, "unknown_parameter", f"unknown parameter(s): {', '.join(unknown)}")
    force = _flag("force", request.rel_url.query.get("force", "0"))
    event = await relay.store.get_event(event_id)
    if event is None:
        raise ApiError(404, "not_found", f"no event {event_id}")
    if event.sync_state is not None:
        raise ApiError(
            409,
            "not_queued",
            "a sync-mode event has no deliveries to replay: its sender's retry is forwarded afresh",
        )
    if force and event.body is None:
        raise ApiError(409, "payload_dropped", "the payload was dropped by payload retention")
    flt = EventFilter(ids=(event_id,))
    n = await (relay.store.requeue_all(flt) if force else relay.store.requeue(flt))
    if n:
        relay.wake(event.route)
    after = await relay.store.get_event(event_id)
    out: dict[str, Any] = {
        "event_id": event_id,
        "requeued": n,
        "force": force,
        "route_active": _route_active(relay, event.route),
        "deliveries": [delivery_json(d) for d in (after or event).deliveries],
    }
    if not n:
        out["message"] = (
            "nothing to replay: no delivery is dead or stale (force=1 replays delivered ones too)"
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
    doc = await _json_body(request, (*_BULK_FIELDS, "force"))
    flt = _bulk_filter(doc, relay)
    force = _flag("force", doc.get("force", False))
    n = await (relay.store.requeue_all(flt) if force else relay.store.requeue(flt))
    if n:
        for name in {flt.route} if flt.route else {rt.cfg.name for rt in relay.routes.values()}:
            relay.wake(name)
    return web.json_response({"requeued": n, "force": force})


async def purge(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    doc = await _json_body(request, _BULK_FIELDS)
    flt = _bulk_filter(doc, relay)
    n = await relay.store.purge(flt)
    return web.json_response({"purged": n})


def _bulk_filter(doc: Mapping[str, object], relay: Relay) -> EventFilter:
    flt = parse_filter(doc, relay.store.clock())
    everything = _flag("all", doc.get("all", False))
    if _empty(flt) and not everything:
        raise ApiError(
            400,
            "empty_filter",
            'name at least one of route, state, key, since, until, ids (or "all": true)',
        )
    return flt


async def find_orphans(relay: Relay) -> dict[tuple[str, str], int]:
    """Open deliveries no worker serves: their route or upstream left the config."""
    served = {
        (rt.cfg.name, up)
        for rt in relay.routes.values()
        if rt.cfg.mode == "queue"
        for up in rt.cfg.upstreams
    }
    opened = await relay.store.open_deliveries()
    return {k: n for k, n in sorted(opened.items()) if k not in served}


async def status(request: web.Request) -> web.Response:
    relay = request.app[RELAY]
    now = relay.store.clock()
    backlog = await relay.store.backlog()
    orphans = await find_orphans(relay)
    relay.metrics.set_orphans(orphans)
    routes = []
    for rt in relay.routes.values():
        b = backlog.get(rt.cfg.name)
        routes.append(
            {
                "name": rt.cfg.name,
                "path": rt.cfg.path,
                "mode": rt.cfg.mode,
                "upstreams": list(rt.cfg.upstreams),
                "pending": b.pending if b else 0,
                "in_flight": b.in_flight if b else 0,
                "dead": b.dead if b else 0,
                "oldest_open_age_seconds": round(now - b.oldest_open_at, 3)
                if b and b.oldest_open_at is not None
                else None,
            }
        )
    reload = relay.metrics.last_reload
    return web.json_response(
        {
            "version": __version__,
            "draining": relay.draining,
            "routes": routes,
            "orphaned": [
                {"route": r, "upstream": u, "deliveries": n} for (r, u), n in orphans.items()
            ],
            "last_reload": None
            if reload is None
            else {"ok": reload.ok, "at": iso(reload.at), "errors": list(reload.errors)},
        }
    )


def add_api_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/status", status)
    app.router.add_get("/api/v1/events", list_events)
    app.router.add_get("/api/v1/events/{id}", show_event)
    app.router.add_post("/api/v1/events/{id}/replay", replay_event)
    app.router.add_post("/api/v1/replay", replay_bulk)
    app.router.add_post("/api/v1/purge", purge)
