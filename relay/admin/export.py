"""``GET /api/v1/export``: events as JSON lines (each with its headers, body, deliveries
and attempts), streamed page by page, so a week of history never sits in memory.

Headers that carry secrets (``Authorization``, cookies, signatures, anything named
like a token) and secret query values are redacted unless ``include_secrets`` is
asked for, which needs an operate token and is written to the audit log. A sealed
store (``storage.encryption``) is exported opened: the relay holds its keys.
"""

from __future__ import annotations

import json
from typing import Any, Final

from aiohttp import web

from relay.admin.api import route_secret_headers
from relay.admin.control import OPERATES, STORE, audit
from relay.admin.views import (
    FILTER_FIELDS,
    ApiError,
    event_detail,
    only_params,
    parse_filter,
    parse_flag,
)
from relay.runtime import RELAY
from relay.store.base import EventInfo

PAGE: Final = 200
_PARAMS: Final = frozenset({"route", "state", "since", "until", "include_secrets"})


def export_json(e: EventInfo, secret_headers: frozenset[str], secrets: bool) -> dict[str, Any]:
    out = event_detail(e, secret_headers)
    if secrets:
        out["headers"] = [[name, value] for name, value in e.headers]
        out["query"] = e.query
    return out


async def export(request: web.Request) -> web.StreamResponse:
    relay, store = request.app[RELAY], request.app[STORE]
    q = request.rel_url.query
    only_params(q, _PARAMS, name_them=True)
    flt = parse_filter({k: q[k] for k in FILTER_FIELDS if k in q}, store.clock())
    secrets = parse_flag("include_secrets", q.get("include_secrets", "false"))
    if secrets and not request.get(OPERATES, False):
        raise ApiError(403, "role", "include_secrets needs an operate token")
    if secrets:
        target = {k: q[k] for k in ("route", "state", "since", "until") if k in q}
        await audit(request, "export_secrets", target, 0, None)
    resp = web.StreamResponse(headers={"Content-Type": "application/x-ndjson; charset=utf-8"})
    await resp.prepare(request)
    before: int | None = None
    while page := await store.list_events(flt, PAGE, before):
        for summary in page:
            e = await store.get_event(summary.id)  # with its attempts; gone if purged since
            if e is not None:
                line = export_json(e, route_secret_headers(relay, e.route), secrets)
                await resp.write(json.dumps(line, separators=(",", ":")).encode() + b"\n")
        before = page[-1].id
    await resp.write_eof()
    return resp


def add_export_routes(app: web.Application) -> None:
    app.router.add_get("/api/v1/export", export)
