"""Steering delivery from the admin API: pause and resume, the audit log, the
reasons and previews of bulk changes, and the protection state for status.

Every change an operator makes (a replay, a purge, a pause, a resume) is written
to the store's audit log with the credential it came with: ``admin_token`` when
the API asked for the token, ``loopback`` when none is configured.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final, Protocol

from aiohttp import web

from relay.admin.views import ApiError, iso, only_params, parse_int
from relay.breaker import State
from relay.forward import shown_url
from relay.logging import get_logger
from relay.runtime import RELAY, Relay, RouteRuntime
from relay.store.base import AuditEntry, Inspection, Keys, Notices, Operations, Pause, Preview

# Set on every request by the token middleware.
CREDENTIAL: Final = web.RequestKey("credential", str)
# Whether the request's credential may act (operate), not only read.
OPERATES: Final = web.RequestKey("operates", bool)
MAX_REASON: Final = 500
MAX_CLIENT: Final = 200
AUDIT_LIMIT: Final = 100


# The full store (inspection and replay): the role that serves admin hands it over.
class AdminStore(Inspection, Operations, Keys, Notices, Protocol):
    """All the admin API and the console may touch of a store: they read and they act,
    never on the hot path's leases or on upkeep."""


STORE: Final = web.AppKey("store", AdminStore)

log = get_logger()


def store_of(request: web.Request) -> AdminStore:
    # config_dict: the console is a sub-app of the admin app and reads its parent's.
    return request.config_dict[STORE]


async def read_json(request: web.Request, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The request's JSON object (empty body: ``{}``), with only ``allowed`` fields."""
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


def parse_reason(doc: Mapping[str, object], *, bulk: bool, previewing: bool = False) -> str | None:
    """The audit log's reason, as the OpenAPI document has it: when given, text of
    at most ``MAX_REASON`` characters (never null); for a bulk change, text that
    says something (checked on a preview too) and required unless previewing."""
    value = doc.get("reason", "")
    if not isinstance(value, str) or len(value) > MAX_REASON:
        raise ApiError(400, "bad_reason", f"reason must be text of at most {MAX_REASON} characters")
    if value.strip() or not bulk:
        return value.strip() or None
    if "reason" in doc and previewing:
        raise ApiError(400, "bad_reason", "reason must say something: leave it out to preview")
    if not previewing:
        raise ApiError(
            400,
            "reason_required",
            'say why: "reason" is written to the audit log (ask with "preview": true first)',
        )
    return None


async def audit(
    request: web.Request,
    action: str,
    target: Mapping[str, Any],
    affected: int,
    reason: str | None,
) -> None:
    store = store_of(request)
    client = request.headers.get("User-Agent")
    entry = AuditEntry(
        at=store.clock(),
        action=action,
        target=json.dumps(dict(target), sort_keys=True, default=str),
        affected=affected,
        credential=str(request.get(CREDENTIAL, "loopback")),
        reason=reason,
        client=None if client is None else client[:MAX_CLIENT],
    )
    await store.add_audit(entry)
    log.info(
        "admin_change",
        action=action,
        target=entry.target,
        affected=affected,
        reason=reason,
        credential=entry.credential,
    )


def preview_json(preview: Preview, what: str) -> dict[str, Any]:
    return {
        "preview": True,
        what: preview.count,
        "events": preview.events,
        "routes": dict(preview.routes),
    }


# --- pause and resume ------------------------------------------------------------


def _queue_route(relay: Relay, name: str) -> RouteRuntime:
    rt = next((r for r in relay.routes.values() if r.cfg.name == name), None)
    if rt is None:
        raise ApiError(404, "not_found", f"no route named {name!r}")
    if not rt.cfg.queued:
        raise ApiError(409, "not_queued", "a sync-mode route forwards at once: nothing to pause")
    return rt


def _upstream(request: web.Request, rt: RouteRuntime) -> str:
    only_params(request.rel_url.query, {"upstream"})
    given = request.rel_url.query.get("upstream", "")
    if not given:
        return ""
    # As configured, or as shown (the status, the console and the logs hide the
    # query's values): the one upstream of the route it names.
    named = [u for u in rt.cfg.served if given in (u, shown_url(u))]
    if len(named) != 1:
        why = "no upstream" if not named else "several upstreams shown as"
        raise ApiError(404, "not_found", f"route {rt.cfg.name!r} has {why} {shown_url(given)!r}")
    return named[0]


async def pause_route(request: web.Request) -> web.Response:
    return await _pause_or_resume(request, pause=True)


async def resume_route(request: web.Request) -> web.Response:
    return await _pause_or_resume(request, pause=False)


async def _pause_or_resume(request: web.Request, pause: bool) -> web.Response:
    relay = request.app[RELAY]
    store = store_of(request)
    rt = _queue_route(relay, request.match_info["route"])
    upstream = _upstream(request, rt)
    reason = parse_reason(await read_json(request, ("reason",)), bulk=False)
    if pause:
        changed = int(await store.pause(rt.cfg.name, upstream, reason))
    else:
        changed = await store.resume(rt.cfg.name, upstream)
        relay.outbound.wake(rt.cfg.name)
    target = {"route": rt.cfg.name, "upstream": shown_url(upstream) or None}
    await audit(request, "pause" if pause else "resume", target, changed, reason)
    return web.json_response({**target, "paused": pause, "changed": changed})


# --- the audit log ---------------------------------------------------------------


def audit_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "id": e.id,
        "at": iso(e.at),
        "action": e.action,
        "target": json.loads(e.target),
        "affected": e.affected,
        "reason": e.reason,
        "credential": e.credential,
        "client": e.client,
    }


async def audit_log(request: web.Request) -> web.Response:
    q = request.rel_url.query
    only_params(q, {"limit", "before_id"})
    limit = parse_int("limit", q.get("limit", "50"), 1, AUDIT_LIMIT)
    before = parse_int("before_id", q["before_id"], 1) if "before_id" in q else None
    entries = await store_of(request).audit_log(limit + 1, before)
    more = len(entries) > limit
    entries = entries[:limit]
    doc: dict[str, Any] = {"entries": [audit_json(e) for e in entries], "next_before_id": None}
    if more:
        doc["next_before_id"] = entries[-1].id
    return web.json_response(doc)


# --- status ----------------------------------------------------------------------


def pause_json(p: Pause) -> dict[str, Any]:
    return {
        "route": p.route,
        "upstream": shown_url(p.upstream) or None,
        "since": iso(p.since),
        "reason": p.reason,
    }


def breakers(relay: Relay) -> list[dict[str, Any]]:
    """Breakers that are not closed, from the gauge every delivering process sets (the
    owner's registry merges the workers'), with the TLS failure behind one if any."""
    return [
        {"route": r, "upstream": u, "state": State(s).name.lower(), "reason": why}
        for r, u, s, why in relay.metrics.breakers()
    ]


def add_control_routes(app: web.Application) -> None:
    app.router.add_post("/api/v1/routes/{route}/pause", pause_route)
    app.router.add_post("/api/v1/routes/{route}/resume", resume_route)
    app.router.add_get("/api/v1/audit", audit_log)
