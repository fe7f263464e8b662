"""The public listener: match a route, check the request, key it, hand it on.

One catch-all handler looks routes up by path in a dict, so a reload can swap
the routes without rebuilding the aiohttp router.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import chain
from typing import Final

import aiohttp
from aiohttp import web

from relay import keys
from relay.config import Route
from relay.config.filters import FilterRule
from relay.config.types import READYZ_PATH
from relay.forward import Via, clean_headers, is_trusted, with_forwarded
from relay.intake import checks, edge, filters, handshakes, hybrid, sync
from relay.intake.queue import handle_filtered, handle_queue
from relay.intake.replies import STORE_RETRY_AFTER, Reply, error, reject
from relay.runtime import RELAY, Relay, RouteRuntime, unready
from relay.store.base import NewEvent
from relay.tracing import Tracing

# Long enough for a burst to drain, short enough that senders come back soon.
BACKPRESSURE_RETRY_AFTER: Final = 30
# Space comes back as deliveries finish and retention runs (every cleanup_interval).
DISK_RETRY_AFTER: Final = 60


@dataclass(slots=True)
class InFlight:
    """What the in-line modes are answering now, each mode's own, kept for the app's
    life: a reload that changes a route's mode leaves each mode with its own kind."""

    sync: sync.Waiters = field(default_factory=dict)
    hybrid: hybrid.Waiters = field(default_factory=dict)


IN_FLIGHT: Final = web.AppKey("in_flight", InFlight)


def header_bytes(raw: Sequence[tuple[bytes, bytes]]) -> int:
    """The header block's size as sent: ``name: value\r\n`` per line."""
    return sum(map(len, chain.from_iterable(raw))) + 4 * len(raw)


async def _read_body(request: web.Request, relay: Relay) -> bytes | Reply:
    limits = relay.config.limits
    if request.content_length is not None and request.content_length > limits.max_body:
        return reject(413, "body_too_large", f"body over {limits.max_body} bytes")
    try:
        if request.content.is_eof():
            return await request.read()  # already buffered: no timer needed
        async with asyncio.timeout(limits.body_timeout):
            return await request.read()
    except web.HTTPRequestEntityTooLarge:
        return reject(413, "body_too_large", f"body over {limits.max_body} bytes")
    except TimeoutError:
        return reject(408, "body_timeout", "the body did not arrive in time")
    except (aiohttp.ClientPayloadError, ConnectionError) as exc:
        return reject(400, "body_incomplete", f"could not read the body: {type(exc).__name__}")


def _backpressure(relay: Relay, cfg: Route) -> Reply | None:
    if relay.disk.low():
        # Before SQLite meets a full disk: deliveries go on and free space meanwhile.
        return reject(
            503, "disk_low", "the relay's disk is nearly full", retry_after=DISK_RETRY_AFTER
        )
    if cfg.queued and relay.backlog.full(cfg.name, cfg.max_pending):
        return reject(
            503, "backpressure", "too many undelivered events", retry_after=BACKPRESSURE_RETRY_AFTER
        )
    return None


def method_not_allowed(cfg: Route) -> web.Response:
    resp = error(405, "method_not_allowed", f"use {', '.join(cfg.methods)}")
    resp.headers["Allow"] = ", ".join(cfg.methods)
    return resp


def _ordering_key(cfg: Route, payload: keys.Payload) -> str | None:
    """The route's ordering key for this request; None (unordered) when no source is present."""
    if cfg.ordering is None or not cfg.queued:
        return None
    found = keys.resolve(cfg.ordering.keys, payload)
    return None if found is None else found[0]


def _version(cfg: Route, payload: keys.Payload) -> str | None:
    if cfg.stale is None or not cfg.queued:
        return None
    return keys.extract(cfg.stale.version, payload)


def _filter(relay: Relay, rt: RouteRuntime, payload: keys.Payload, key: str) -> FilterRule | None:
    """The first rule the event meets, counted and logged; under ``dedupe: shadow`` only
    counted (None: the event goes on as if no rule had matched)."""
    if not rt.cfg.filters or (rule := filters.first_match(rt.cfg.filters, payload)) is None:
        return None
    relay.metrics.filtered.labels(rt.cfg.name, rule.name, rule.action).inc()
    shadow = rt.cfg.dedupe == "shadow"
    rt.log.info(
        "filter_would_apply" if shadow else "filter_applied",
        key=key,
        rule=rule.name,
        action=rule.action,
    )
    return None if shadow else rule


def _upstreams(cfg: Route, rule: FilterRule | None) -> tuple[str, ...]:
    """Where the event's deliveries go: the rule's alternate, else the route's
    upstreams; none in sync mode (it forwards in line) unless a rule dropped it."""
    if rule is not None and rule.upstream is not None:
        return (rule.upstream,)
    return cfg.upstreams if cfg.queued or rule is not None else ()


async def _admit(request: web.Request, relay: Relay, rt: RouteRuntime) -> keys.Payload | Reply:
    """Limits, the body, a provider's check, backpressure and the signature: what a
    request passes before it is keyed."""
    cfg = rt.cfg
    if (refused := edge.check(request, relay, rt)) is not None:
        return refused
    limit = relay.config.limits.max_header_bytes
    if header_bytes(request.raw_headers) > limit:
        # Bounded before anything is read, stored or forwarded.
        return reject(431, "headers_too_large", f"request headers over {limit} bytes")
    # A route that answers a provider's check reads the body first: checks are never
    # refused for a backlog they do not add to.
    if cfg.handshake is None and (full := _backpressure(relay, cfg)) is not None:
        return full
    body = await _read_body(request, relay)
    if isinstance(body, Reply):
        return body
    payload = keys.Payload(request.headers, request.query, body)
    if cfg.handshake is not None:
        if (shake := checks.handshake(request, relay, rt, payload)) is not None:
            return shake
        if request.method not in cfg.methods:  # a GET that is no check
            return Reply(method_not_allowed(cfg), "rejected", reason="method_not_allowed")
        if (full := _backpressure(relay, cfg)) is not None:
            return full
    if (why := checks.verify(request, relay, rt, body)) is not None:
        return reject(401, "bad_signature", why)
    return payload


async def _accept(
    request: web.Request, relay: Relay, rt: RouteRuntime, in_flight: InFlight
) -> Reply:
    cfg = rt.cfg
    admitted = await _admit(request, relay, rt)
    if isinstance(admitted, Reply):
        return admitted
    payload, body = admitted, admitted.body
    found = keys.resolve(cfg.keys, payload)
    if found is None:
        if cfg.require_key:
            wanted = ", ".join(str(k) for k in cfg.keys)
            return reject(
                400,
                "missing_key",
                f"no idempotency key in the request (looked for {wanted};"
                " an empty value, an object or NaN/Infinity is none)",
            )
        found = (payload.sha256(), keys.SHA256)
    key, source = found
    rule = _filter(relay, rt, payload, key)
    if (tracing := relay.tracing) is not None:
        tracing.note({"relay.key_source": str(source)})
    trusted = is_trusted(request.remote, relay.config.trusted_proxies)
    via = Via(request.remote, request.scheme, request.host, trusted)
    headers = clean_headers(request.headers.items())
    event = NewEvent(
        route=cfg.name,
        key=key,
        key_source=str(source),
        fingerprint=payload.sha256(),
        method=request.method,
        path=request.path,
        # As received: yarl's query_string is decoded (%00 would become a NUL byte).
        query=request.raw_path.partition("?")[2],
        # Queue mode keeps the X-Forwarded-* of this hop with the event: it is
        # delivered later, when the sender's connection is long gone.
        headers=with_forwarded(headers, via) if cfg.queued else headers,
        body=body,
        received_at=relay.store.clock(),
        upstreams=_upstreams(cfg, rule),
        # Shadow revives nothing: the copy goes out on its own.
        revive_dead=cfg.revive_dead and cfg.dedupe == "enforce",
        ordering_key=_ordering_key(cfg, payload),
        version=_version(cfg, payload),
        trace=None if tracing is None else tracing.traceparent(),
        filtered=rule.name if rule is not None and rule.upstream is None else None,
    )
    if event.filtered is not None:
        return await handle_filtered(relay, rt, event)
    if cfg.mode == "sync":
        return await sync.handle_sync(relay, rt, event, via, in_flight.sync)
    if cfg.mode == "hybrid":
        return await hybrid.handle_hybrid(relay, rt, event, in_flight.hybrid)
    return await handle_queue(relay, rt, event)


async def handle(request: web.Request) -> web.StreamResponse:
    relay = request.app[RELAY]
    try:
        response = await _handle(request, relay)
    finally:
        relay.after_request(request)
    if relay.leaving:
        _close(response)
    return response


async def _handle(request: web.Request, relay: Relay) -> web.StreamResponse:
    t0 = time.perf_counter()
    rt = relay.routes.get(request.path)
    if rt is None:
        relay.metrics.rejected.labels("", "no_route").inc()
        return error(404, "no_route", "no route for this path")
    cfg = rt.cfg
    if request.method not in cfg.methods and not handshakes.takes(cfg.provider, request.method):
        relay.metrics.rejected.labels(cfg.name, "method_not_allowed").inc()
        return method_not_allowed(cfg)
    if relay.draining:
        return error(503, "draining", "shutting down", retry_after=STORE_RETRY_AFTER)
    if relay.tracing is None:
        return await _serve(request, relay, rt, t0, None)
    # The webhook's SERVER span: current while it is handled and logged.
    with relay.tracing.ingest(cfg.name, cfg.mode, request.method, request.headers):
        return await _serve(request, relay, rt, t0, relay.tracing)


# Outcomes of a webhook that was seen before (an ack or an answer without a forward).
_DUPLICATES: Final = frozenset({"duplicate", "replayed"})


async def _serve(
    request: web.Request, relay: Relay, rt: RouteRuntime, t0: float, tracing: Tracing | None
) -> web.StreamResponse:
    task = asyncio.current_task()
    assert task is not None
    relay.active.add(task)
    try:
        reply = await _accept(request, relay, rt, request.app[IN_FLIGHT])
    finally:
        relay.active.discard(task)
    elapsed = time.perf_counter() - t0
    if reply.outcome == checks.HANDSHAKE:
        checks.handshake_done(relay, rt, reply, elapsed)
        return reply.response
    status = reply.response.status
    rt.received(relay.metrics, reply.outcome).inc()
    if reply.reason is not None:
        relay.metrics.rejected.labels(rt.cfg.name, reply.reason).inc()
    rt.ingest_seconds(relay.metrics).observe(elapsed)
    if tracing is not None:
        attributes: dict[str, str | int | bool] = {
            "relay.outcome": reply.outcome,
            "relay.duplicate": reply.outcome in _DUPLICATES,
            "http.response.status_code": status,
        }
        if reply.reason is not None:
            attributes["relay.reason"] = reply.reason
        tracing.note(attributes)
    rt.log.info(
        "webhook",
        key=reply.key,
        outcome=reply.outcome,
        reason=reply.reason,
        status=status,
        ms=round(elapsed * 1000, 2),
    )
    return reply.response


async def readyz(request: web.Request) -> web.Response:
    """Readiness for a load balancer in front of the webhook listener: ready, draining
    or store_unavailable, and nothing more (strangers can reach it)."""
    relay = request.app[RELAY]
    if (why := await unready(relay, relay.store.ping)) is not None:
        response = web.json_response({"status": why}, status=503)
    else:
        response = web.json_response({"status": "ready"})
    if relay.leaving:
        _close(response)
    return response


def _close(response: web.StreamResponse) -> None:
    # A kept-alive connection would carry the balancer's next request to a process
    # that is about to close its listener: each answer ends its connection instead.
    # (Set here, not in an on_response_prepare hook: a hook costs every webhook.)
    response.force_close()
    response.headers["Connection"] = "close"


def add_routes(app: web.Application) -> None:
    app[IN_FLIGHT] = InFlight()
    app.router.add_get(READYZ_PATH, readyz, allow_head=True)
    # The configured paths first, each a plain resource the router finds in its
    # index; the catch-all (a regex per request) then serves only paths a reload
    # added and the 404s. Every one is the same handler, which looks the route up.
    for path in app[RELAY].routes:
        if path != READYZ_PATH and path.startswith("/") and not set(path) & set("{}%"):
            app.router.add_route("*", path, handle)
    app.router.add_route("*", "/{tail:.*}", handle)
