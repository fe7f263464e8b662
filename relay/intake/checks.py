"""What is checked before a webhook is keyed: a provider's URL check (answered here,
never stored) and the signature, over the URL the sender signed where it signs one."""

from __future__ import annotations

import json
import time
from typing import Final

from aiohttp import web

from relay import keys, signatures
from relay.config import Route
from relay.forward import is_trusted, shown_url
from relay.intake import handshakes
from relay.intake.replies import Reply
from relay.runtime import Relay, RouteRuntime

# A provider's URL check: counted and logged as one, not as a webhook.
HANDSHAKE: Final = "handshake"


def handshake_done(relay: Relay, rt: RouteRuntime, reply: Reply, elapsed: float) -> None:
    provider = rt.cfg.provider or ""
    outcome = "answered" if reply.reason is None else "refused"
    relay.metrics.handshakes.labels(rt.cfg.name, provider, outcome).inc()
    log = rt.log.info if reply.reason is None else rt.log.warning
    log(
        "handshake",
        provider=provider,
        outcome=outcome,
        reason=reply.reason,
        status=reply.response.status,
        ms=round(elapsed * 1000, 2),
    )


def _first(value: str | None) -> str | None:
    """The leftmost (the sender's side) of a comma-separated forwarding header."""
    return value.split(",")[0].strip() or None if value else None


def signed_url(request: web.Request, cfg: Route, trusted: bool) -> str:
    """The URL the sender called, as Twilio and Square sign it: the route's
    ``public_url``, else rebuilt from the request (a trusted proxy's X-Forwarded-Proto
    and -Host believed), with the query as it came."""
    query = request.raw_path.partition("?")[2]
    base = cfg.public_url
    if base is None:
        proto = request.scheme
        host = request.host
        if trusted:
            proto = _first(request.headers.get("X-Forwarded-Proto")) or proto
            host = _first(request.headers.get("X-Forwarded-Host")) or host
        base = f"{proto}://{host}{request.raw_path.partition('?')[0]}"
    return f"{base}?{query}" if query else base


def verify(request: web.Request, relay: Relay, rt: RouteRuntime, body: bytes) -> str | None:
    if rt.scheme is None or rt.cfg.verify is None:
        return None
    url = ""
    if rt.scheme.name in signatures.URL_SIGNED:
        url = signed_url(request, rt.cfg, is_trusted(request.remote, relay.config.trusted_proxies))
    why = signatures.verify(
        rt.scheme,
        rt.secrets,
        request.headers,
        body,
        now=time.time(),
        tolerance=rt.cfg.verify.tolerance,
        url=url,
    )
    if why is not None:
        relay.metrics.signature_failures.labels(rt.cfg.name, why).inc()
        if url:  # the URL checked is what an operator behind a proxy needs to see
            rt.log.warning("signature_url_checked", reason=why, url=shown_url(url))
    return why


def handshake(
    request: web.Request, relay: Relay, rt: RouteRuntime, payload: keys.Payload
) -> Reply | None:
    """The answer to the route's provider's URL check, or None when this is no check."""
    provider = rt.cfg.provider or ""
    found = handshakes.answer(
        provider, request.method, payload, handshakes.Keys(rt.secrets, rt.verify_tokens)
    )
    if found is None:
        return None
    if provider in handshakes.SIGNED and (why := verify(request, relay, rt, payload.body)):
        body = json.dumps({"error": "bad_signature", "message": why})
        found = handshakes.Answer(401, body, handshakes.JSON, why)
    resp = web.Response(status=found.status, text=found.body, content_type=None)
    text = found.content_type == handshakes.TEXT
    resp.headers["Content-Type"] = found.content_type + ("; charset=utf-8" if text else "")
    # An echoed challenge is a stranger's text: never to be sniffed into HTML, nor kept.
    resp.headers["X-Content-Type-Options"] = "nosniff"
    resp.headers["Cache-Control"] = "no-store"
    return Reply(resp, HANDSHAKE, reason=found.refused)
