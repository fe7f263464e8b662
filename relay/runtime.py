"""A process's runtime state: routes, store, session, backlog, and the replies of the public app."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from relay import forward, signatures
from relay.backlog import Backlog
from relay.config import Config, Route
from relay.errors import StoreUnavailable
from relay.forward import Result, Via, client_timeout, upstream_headers
from relay.logging import get_logger
from relay.metrics import Metrics
from relay.store.base import DeliveryStore, Ingested, NewEvent, StoredResponse, new_token
from relay.tracing import Tracing

REPLAYED: Final = "Idempotent-Replayed"
# A shadow route stores a copy of a seen key under the key, this, and a token; the
# backend is sent the key alone. A unit separator: no key a header can carry has one.
SHADOW_COPY: Final = "\x1fshadow\x1f"
STORE_RETRY_AFTER: Final = 5


@dataclass(slots=True)
class RouteRuntime:
    """A route's config plus what is derived from it once, not per request."""

    cfg: Route
    timeout: aiohttp.ClientTimeout
    scheme: signatures.Scheme | None
    secrets: tuple[bytes, ...]
    log: Any
    # Sync mode: keys being forwarded by this process, awaited by their duplicates.
    waiters: dict[str, asyncio.Future[Any]] = field(default_factory=dict)
    # Metric children by label, looked up once per route (labels() costs a lock).
    _children: dict[str, Any] = field(default_factory=dict)

    def received(self, metrics: Metrics, outcome: str) -> Any:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = metrics.received.labels(self.cfg.name, outcome)
        return child

    def ingest_seconds(self, metrics: Metrics) -> Any:
        child = self._children.get("/ingest_seconds")
        if child is None:
            child = metrics.ingest_seconds.labels(self.cfg.name, self.cfg.mode)
            self._children["/ingest_seconds"] = child
        return child

    def mismatch(
        self, metrics: Metrics, event: NewEvent, event_id: int, stored_fingerprint: str
    ) -> Reply | None:
        """A copy whose body differs from the first one's: counted and logged; refused
        (422) when the route says ``on_payload_mismatch: reject``, else None (a duplicate)."""
        if stored_fingerprint == event.fingerprint:
            return None
        metrics.mismatches.labels(self.cfg.name).inc()
        self.log.warning("payload_mismatch", key=event.key, event_id=event_id)
        if self.cfg.on_payload_mismatch == "reject":
            return reject(422, "payload_mismatch", "this key was used with a different body")
        return None

    def shadowed(self, metrics: Metrics, event: NewEvent, stored_fingerprint: str) -> None:
        """``dedupe: shadow`` let a copy through: count what enforcing would have done."""
        metrics.shadow_duplicates.labels(self.cfg.name, event.key_source.partition(":")[0]).inc()
        if stored_fingerprint != event.fingerprint:
            metrics.shadow_mismatches.labels(self.cfg.name).inc()

    def duplicate(self, metrics: Metrics, event: NewEvent) -> None:
        """A copy absorbed (acked again or replayed), counted by the kind of key that caught it."""
        metrics.duplicates.labels(self.cfg.name, event.key_source.partition(":")[0]).inc()

    @classmethod
    def build(cls, cfg: Route) -> RouteRuntime:
        scheme: signatures.Scheme | None = None
        secrets: tuple[bytes, ...] = ()
        if cfg.verify is not None:
            v = cfg.verify
            scheme = signatures.SCHEMES[v.scheme]
            if v.scheme == "hmac-sha256":
                # Only the generic scheme takes its wire format from the config.
                scheme = dataclasses.replace(
                    scheme, header=v.header or scheme.header, encoding=v.encoding, prefix=v.prefix
                )
            secrets = tuple(signatures.decode_secret(scheme, s) for s in v.secrets)
        return cls(
            cfg=cfg,
            timeout=client_timeout(cfg.timeout),
            scheme=scheme,
            secrets=secrets,
            log=get_logger(route=cfg.name),
        )

    def upstream_headers(
        self, headers: Iterable[tuple[str, str]], key: str, via: Via | None, body: bytes
    ) -> CIMultiDict[str]:
        """The upstream request's headers; re-signed now when the route says ``resign``."""
        key = key.partition(SHADOW_COPY)[0]
        out = upstream_headers(headers, key=key, key_header=self.cfg.key_header, via=via)
        if self.cfg.resign and self.scheme is not None and self.secrets:
            # A queued event may go out days after it was signed; a backend that checks
            # timestamps (Stripe's libraries: 300 s) needs a fresh signature. The first
            # configured secret signs: list the one the backend knows first.
            fresh = signatures.sign(self.scheme, self.secrets[0], out, body, now=time.time())
            for name, value in fresh.items():
                out[name] = value  # replaces every case-variant of the header
        return out


@dataclass(frozen=True, slots=True)
class InlineAttempt:
    """A hybrid-mode attempt sent in line: ``answer`` resolves when the upstream
    answers, ``task`` ends once the outcome is recorded (or nothing was sent)."""

    answer: asyncio.Future[Result]
    task: asyncio.Task[None]


async def not_now(route: str, upstream: str, event_id: int) -> InlineAttempt | None:
    """No dispatcher (yet, or any more): nothing goes in line; the queue takes it."""
    return None


@dataclass(slots=True)
class Relay:
    """State shared by every request of the public app, and by admin and housekeeping."""

    config: Config
    # The hot path only: in a worker process that is all there is (the owner keeps
    # inspection and maintenance); the roles hand the full store to admin themselves.
    store: DeliveryStore
    metrics: Metrics
    routes: dict[str, RouteRuntime] = field(default_factory=dict)  # by path
    session: aiohttp.ClientSession | None = None
    backlog: Backlog = field(default_factory=Backlog)
    wake: Callable[[str], None] = lambda route: None
    # Hybrid mode: send a just-stored event now (the dispatcher's deliver_now).
    deliver_now: Callable[[str, str, int], Awaitable[InlineAttempt | None]] = not_now
    draining: bool = False
    # Called after every request (the connection guard re-arms its header deadline).
    after_request: Callable[[web.Request], None] = lambda request: None
    # Handlers running now, so shutdown can cut them off when the grace runs out.
    active: set[asyncio.Task[Any]] = field(default_factory=set)
    # None unless tracing.enabled (set by the app before its first request).
    tracing: Tracing | None = None

    def cut_off(self) -> int:
        """Cancel every handler still running (the grace is over); how many."""
        tasks = list(self.active)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def set_routes(self, routes: tuple[Route, ...]) -> None:
        old = {rt.cfg.path: rt for rt in self.routes.values()}
        fresh: dict[str, RouteRuntime] = {}
        for r in routes:
            prev = old.get(r.path)
            rt = RouteRuntime.build(r)
            if prev is not None and prev.cfg.name == r.name:
                rt.waiters = prev.waiters  # in-flight sync keys keep their waiters
            fresh[r.path] = rt
        self.routes = fresh
        self.backlog.set_routes((r.name, len(r.upstreams)) for r in routes)


RELAY: Final = web.AppKey("relay", Relay)

_ACCEPTED_ACK: Final = b'{"status": "accepted", "event_id": %d}'
_DUPLICATE_ACK: Final = b'{"status": "duplicate", "event_id": %d}'


def queue_ack(cfg: Route, event_id: int, duplicate: bool) -> web.Response:
    """The queue's answer to a sender: stored (and, ``duplicate``, seen before)."""
    if cfg.ack.body is not None:
        body = cfg.ack.body.encode()
    else:
        # Formatted, not json.dumps: one per webhook, and both fields are plain.
        body = (_DUPLICATE_ACK if duplicate else _ACCEPTED_ACK) % event_id
    resp = web.Response(status=cfg.ack.status, body=body, content_type=None)
    resp.headers["Content-Type"] = cfg.ack.content_type
    if duplicate:
        resp.headers[REPLAYED] = "true"
    return resp


def answer(status: int, content_type: str | None, body: bytes, replayed: bool) -> web.Response:
    """A backend's answer passed on to a sender (``replayed``: to a duplicate)."""
    resp = web.Response(status=status, body=body, content_type=None)
    if content_type:
        resp.headers["Content-Type"] = content_type
    if replayed:
        resp.headers[REPLAYED] = "true"
    return resp


def replay(stored: StoredResponse) -> web.Response:
    """A stored final answer, again, to a duplicate."""
    resp = answer(stored.status, stored.content_type, stored.body, replayed=True)
    if stored.body_omitted:
        resp.headers["Idempotent-Body-Omitted"] = "true"
    return resp


def kept(result: Result, cap: int) -> StoredResponse:
    """A final answer as the store keeps it for duplicates: a body over ``cap`` omitted."""
    omitted = len(result.body) > cap
    return StoredResponse(
        status=result.status or 0,
        content_type=result.content_type,
        body=b"" if omitted else result.body,
        body_omitted=omitted,
    )


@dataclass(slots=True)
class Reply:
    response: web.Response
    outcome: str  # accepted | duplicate | forwarded | replayed | rejected | ...
    key: str | None = None
    reason: str | None = None


def error(status: int, reason: str, message: str, retry_after: float | None = None) -> web.Response:
    headers = {"Retry-After": str(int(retry_after))} if retry_after is not None else None
    return web.json_response({"error": reason, "message": message}, status=status, headers=headers)


def reject(status: int, reason: str, message: str, retry_after: float | None = None) -> Reply:
    return Reply(error(status, reason, message, retry_after), "rejected", reason=reason)


def absorbed(relay: Relay, rt: RouteRuntime, event: NewEvent, got: Ingested) -> Reply | None:
    """A queued key seen before: the 422 of a refused mismatch, else None, counted as a
    duplicate."""
    if refused := rt.mismatch(relay.metrics, event, got.event_id, got.stored_fingerprint):
        return refused
    rt.duplicate(relay.metrics, event)
    return None


def duplicate_ack(relay: Relay, rt: RouteRuntime, event: NewEvent, got: Ingested) -> Reply:
    """The queue's answer to a duplicate; dead deliveries it revived go out now."""
    if got.revived:
        rt.log.info("event_revived", key=event.key, event_id=got.event_id, deliveries=got.revived)
        relay.wake(rt.cfg.name)
    return Reply(queue_ack(rt.cfg, got.event_id, duplicate=True), "duplicate", event.key)


def shadow_copy(event: NewEvent) -> NewEvent:
    """``dedupe: shadow``: a copy of a seen key, under a key of its own, so it is stored
    and delivered while the key stays claimed by its first copy."""
    return dataclasses.replace(event, key=f"{event.key}{SHADOW_COPY}{new_token()[:16]}")


async def store_event(relay: Relay, rt: RouteRuntime, event: NewEvent) -> Ingested | Reply:
    """Claim and commit a queued event, counted in the backlog; a 503 (the sender keeps
    it) when the store cannot commit."""
    try:
        got = await relay.store.ingest(event)
    except StoreUnavailable as exc:
        rt.log.error("store_unavailable", key=event.key, error=str(exc))
        return reject(503, "store_unavailable", "could not store the event", STORE_RETRY_AFTER)
    relay.backlog.ingested(rt.cfg.name, got)
    if relay.tracing is not None and not got.first:
        relay.tracing.link(got.stored_trace)  # to the first copy's trace
    return got


async def send_traced(
    relay: Relay, rt: RouteRuntime, headers: CIMultiDict[str], **send: Any
) -> Result:
    """``forward.send`` in line (sync mode), a CLIENT span of the ingest span when tracing."""
    assert relay.session is not None
    if relay.tracing is None:
        return await forward.send(relay.session, headers=headers, **send)
    with relay.tracing.attempt(rt.cfg.name, rt.cfg.upstreams[0], 1, None) as span:
        span.inject(headers)
        result = await forward.send(relay.session, headers=headers, **send)
        span.answered(result.status, result.error, "answered")
        return result
