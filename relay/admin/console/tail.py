"""The live tail: the last webhooks and attempts, then what comes, polled by the
page's script every second; duplicates and refusals, which leave no event of their
own, from the received and rejected totals the page compares between polls."""

from __future__ import annotations

from typing import Any, Final

from aiohttp import web

from relay.admin.console.common import render
from relay.admin.console.pages import query, received_totals, totals
from relay.admin.control import STORE
from relay.admin.views import event_state, iso, parse_int, shown_key
from relay.forward import shown_url
from relay.runtime import RELAY
from relay.store.base import EventFilter, EventInfo, RecentAttempt

TAIL: Final = 50
TAIL_FIRST: Final = 20  # rows the tail page starts with


async def tail(request: web.Request) -> web.Response:
    """The tail starts with what came last (then the page's script adds what comes)."""
    store = request.config_dict[STORE]
    events = [_tail_event(e) for e in await store.list_events(EventFilter(), TAIL_FIRST)]
    attempts = [_tail_attempt(a) for a in await store.recent_attempts(0, TAIL_FIRST)]
    return render(
        request,
        "tail.html",
        {
            "events": events,
            "attempts": attempts,
            "last_event": max((e["id"] for e in events), default=0),
            "last_attempt": max((a["id"] for a in attempts), default=0),
        },
    )


def _tail_event(e: EventInfo) -> dict[str, Any]:
    key, shadow = shown_key(e.key)
    return {
        "id": e.id,
        "route": e.route,
        "key": key + (" (shadow copy)" if shadow else ""),
        "state": event_state(e),
        "received_at": iso(e.received_at),
        "duplicates": e.duplicates,
    }


def _tail_attempt(a: RecentAttempt) -> dict[str, Any]:
    return {
        "id": a.id,
        "event_id": a.event_id,
        "route": a.route,
        "upstream": shown_url(a.upstream),
        "started_at": iso(a.started_at),
        "status": a.status,
        "error": a.error,
        "duration_ms": round(a.duration_ms, 1),
    }


async def tail_json(request: web.Request) -> web.Response:
    """What came since the ids the page has seen; the page's script polls it."""
    store = request.config_dict[STORE]
    q = query(request, frozenset({"event", "attempt"}))
    after_event = parse_int("event", q.get("event", "0"), 0)
    after_attempt = parse_int("attempt", q.get("attempt", "0"), 0)
    newest = await store.list_events(EventFilter(), TAIL)
    attempts = await store.recent_attempts(after_attempt, TAIL)
    relay = request.config_dict[RELAY]
    return web.json_response(
        {
            "events": [_tail_event(e) for e in newest if e.id > after_event],
            "attempts": [_tail_attempt(a) for a in attempts],
            # Totals the page diffs between polls: duplicates and refusals leave no event.
            "received": [[r, o, n] for (r, o), n in sorted(received_totals(relay).items())],
            "rejected": [
                [r, why, n]
                for (r, why), n in sorted(
                    totals(relay, "relay_webhooks_rejected", "reason").items()
                )
            ],
        }
    )


def add_tail_routes(app: web.Application) -> None:
    app.router.add_get("/tail", tail, name="tail")
    app.router.add_get("/tail.json", tail_json, name="tail_json")
