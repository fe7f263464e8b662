"""A process's state, and the one port between its two wings.

``intake`` (while the sender waits) and ``delivery`` (after the ack) never import
each other: intake reaches delivery only through ``Outbound``, which each process
role hands its ``Relay`` when it builds it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import ssl
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Final, Protocol

import aiohttp
from aiohttp import web
from multidict import CIMultiDict

from relay import signatures, tls
from relay.backlog import Backlog
from relay.breaker import Buckets
from relay.config import Config, ListenerTLS, Route, Upstream
from relay.disk import DiskSpace, sqlite_path
from relay.forward import (
    PLAIN,
    Result,
    Target,
    Via,
    client_timeout,
    shown_url,
    upstream_headers,
)
from relay.logging import get_logger
from relay.metrics import Metrics
from relay.store.base import DeliveryStore
from relay.tracing import Tracing

# A shadow route stores a copy of a seen key under the key, this, and a token; the
# backend is sent the key alone. A unit separator: no key a header can carry has one.
SHADOW_COPY: Final = "\x1fshadow\x1f"


def _server_context(s: ListenerTLS) -> ssl.SSLContext:
    return tls.server_context(s.cert_file, s.key_file, s.client_ca_file, s.client_auth)


def _listener_expiry(s: ListenerTLS) -> tuple[tuple[str, float], ...]:
    return tls.expiry(s.client_ca_file, s.cert_file, "client_ca")


def _target(upstream: Upstream) -> Target:
    """Read when routes are set (start, reload): a reload picks up rotated files."""
    if upstream.tls is None:
        return Target(headers=upstream.headers)
    t = upstream.tls
    return Target(
        headers=upstream.headers,
        context=tls.client_context(t.ca_file, t.cert_file, t.key_file),
        server_name=t.server_name,
        expires=tls.expiry(t.ca_file, t.cert_file),
    )


@dataclass(slots=True)
class RouteRuntime:
    """A route's config plus what is derived from it once, not per request."""

    cfg: Route
    timeout: aiohttp.ClientTimeout
    scheme: signatures.Scheme | None
    secrets: tuple[bytes, ...]
    log: Any
    # Meta's subscription check: the tokens the operator typed in its dashboard.
    verify_tokens: tuple[bytes, ...] = ()
    # ingress_rate's buckets (one, or one per source); rebuilt, so refilled, on reload.
    ingress: Buckets | None = None
    # What each upstream given as an object adds: headers, TLS (by URL).
    targets: dict[str, Target] = field(default_factory=dict)
    # Metric children by label, looked up once per route (labels() costs a lock).
    _children: dict[str, Any] = field(default_factory=dict)

    def received(self, metrics: Metrics, outcome: str) -> Any:
        child = self._children.get(outcome)
        if child is None:
            child = self._children[outcome] = metrics.received.labels(self.cfg.name, outcome)
        return child

    def duplicates(self, metrics: Metrics, source: str) -> Any:
        """The duplicates counter of this route for a kind of key (``header``, ``json``...)."""
        child = self._children.get(f"/duplicates:{source}")
        if child is None:
            child = metrics.duplicates.labels(self.cfg.name, source)
            self._children[f"/duplicates:{source}"] = child
        return child

    def ingest_seconds(self, metrics: Metrics) -> Any:
        child = self._children.get("/ingest_seconds")
        if child is None:
            child = metrics.ingest_seconds.labels(self.cfg.name, self.cfg.mode)
            self._children["/ingest_seconds"] = child
        return child

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
            verify_tokens=tuple(
                t.encode() for t in (() if cfg.handshake is None else cfg.handshake.verify_tokens)
            ),
            targets={e.url: _target(e) for e in cfg.endpoints},
            ingress=(
                None
                if cfg.ingress_rate is None
                else Buckets(cfg.ingress_rate.rate, cfg.ingress_rate.burst)
            ),
        )

    def target(self, upstream: str) -> Target:
        return self.targets.get(upstream, PLAIN)

    def upstream_headers(
        self,
        headers: Iterable[tuple[str, str]],
        key: str,
        via: Via | None,
        body: bytes,
        upstream: str,
    ) -> CIMultiDict[str]:
        """The upstream request's headers, with the upstream's own (its auth) in place
        of the sender's of the same name; re-signed now when the route says ``resign``."""
        key = key.partition(SHADOW_COPY)[0]
        out = upstream_headers(headers, key=key, key_header=self.cfg.key_header, via=via)
        for name, value in self.target(upstream).headers:
            out[name] = value
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


class Outbound(Protocol):
    """What intake (and admin, and upkeep) may ask of delivery."""

    def wake(self, route: str) -> None:
        """Work was stored or requeued on ``route``: deliver it now, not at the next poll."""

    async def deliver_now(self, route: str, upstream: str, event_id: int) -> InlineAttempt | None:
        """Hybrid mode: send this just-stored event now, as one of the upstream's
        attempts; None when it cannot go now (the queue takes it)."""


class NoDelivery:
    """The port of a process, or a moment, in which nothing delivers."""

    def wake(self, route: str) -> None:
        pass

    async def deliver_now(
        self, _route: str, _upstream: str, _event_id: int
    ) -> InlineAttempt | None:
        return None


@dataclass(slots=True)
class Relay:
    """State shared by every request of the public app, and by admin and housekeeping."""

    config: Config
    # The hot path only: in a worker process that is all there is (the owner keeps
    # inspection and maintenance); the roles hand the full store to admin themselves.
    store: DeliveryStore
    metrics: Metrics
    # Delivery, as intake sees it: the role decides what stands behind it.
    outbound: Outbound = field(default_factory=NoDelivery)
    routes: dict[str, RouteRuntime] = field(default_factory=dict)  # by path
    session: aiohttp.ClientSession | None = None
    backlog: Backlog = field(default_factory=Backlog)
    # SIGTERM came: readyz fails and answers close their connections, but webhooks
    # are still served (for drain_delay), so a load balancer can move senders away.
    leaving: bool = False
    # The listener is closed: what still arrives on open connections gets 503.
    draining: bool = False
    # Called after every request (the connection guard re-arms its header deadline).
    after_request: Callable[[web.Request], None] = lambda _request: None
    # Handlers running now, so shutdown can cut them off when the grace runs out.
    active: set[asyncio.Task[Any]] = field(default_factory=set)
    # None unless tracing.enabled (set by the app before its first request).
    tracing: Tracing | None = None
    # The TLS of each listener this process serves ("webhook", "admin"), by name.
    listeners: dict[str, tls.ServerTLS] = field(default_factory=dict)
    # The room left beside a SQLite store (storage.min_free); set from the config.
    disk: DiskSpace = field(default_factory=lambda: DiskSpace(None, 0))

    def __post_init__(self) -> None:
        st = self.config.storage
        self.disk = DiskSpace(sqlite_path(st.url), st.min_free, st.min_free_ratio)

    def listener_tls(self, name: str, settings: ListenerTLS | None) -> ssl.SSLContext | None:
        """The context to start listener ``name`` with (None: plain HTTP); a reload
        swaps its certificates (``swap_certificates``)."""
        if settings is None:
            return None
        holder = tls.ServerTLS(lambda: _server_context(settings))
        self.listeners[name] = holder
        self.metrics.set_listener_certificates(name, _listener_expiry(settings))
        return holder.listening

    def swap_certificates(self, new: Config) -> Callable[[], None]:
        """Read every listener's files as ``new`` names them (raising TLSFilesError,
        nothing changed, if one cannot be used); the returned call swaps them in."""
        # An admin listener that moved keeps its old settings until a restart.
        moved = new.admin.listen != self.config.admin.listen
        wanted = {"webhook": new.tls, "admin": None if moved else new.admin.tls}
        ready = [
            (name, holder, settings, _server_context(settings))
            for name, holder in self.listeners.items()
            if (settings := wanted[name]) is not None
        ]

        def commit() -> None:
            for name, holder, settings, context in ready:
                holder.swap(context)
                self.metrics.set_listener_certificates(name, _listener_expiry(settings))

        return commit

    def cut_off(self) -> int:
        """Cancel every handler still running (the grace is over); how many."""
        tasks = list(self.active)
        for task in tasks:
            task.cancel()
        return len(tasks)

    def set_routes(self, routes: tuple[Route, ...]) -> None:
        self.routes = {r.path: RouteRuntime.build(r) for r in routes}
        for r in routes:
            prime(self.metrics, r)
        self.metrics.set_certificates(
            (rt.cfg.name, url, file, at)
            for rt in self.routes.values()
            for url, target in rt.targets.items()
            for file, at in target.expires
        )
        self.backlog.set_routes((r.name, len(r.upstreams)) for r in routes)


RELAY: Final = web.AppKey("relay", Relay)


async def unready(relay: Relay, ping: Callable[[], Awaitable[bool]]) -> str | None:
    """Why ``/readyz`` answers 503 (``draining``, ``store_unavailable``), on either
    listener; None when ready."""
    if relay.leaving or relay.draining:
        return "draining"
    try:
        ok = await ping()
    except Exception:  # a store that cannot answer is not ready, whatever it raised
        ok = False
    return None if ok else "store_unavailable"


_OUTCOMES: Final = {
    "queue": ("accepted", "duplicate", "rejected"),
    "sync": ("forwarded", "replayed", "duplicate", "rejected"),
    "hybrid": ("accepted", "forwarded", "replayed", "duplicate", "rejected"),
}
_SIGNATURE_REASONS: Final = (
    "missing_signature",
    "malformed_signature",
    "timestamp_out_of_tolerance",
    "signature_mismatch",
)


Series = list[tuple[Any, tuple[str, ...]]]


def _intake_series(m: Metrics, r: Route) -> Series:
    out: Series = [(m.received, (r.name, o)) for o in _OUTCOMES[r.mode]]
    out += [(m.received, (r.name, "filtered"))] if r.filters else []
    reasons = ["body_too_large", "method_not_allowed", "disk_low", "store_full"]
    reasons += ["bad_signature"] if r.verify is not None else []
    reasons += ["missing_key"] if r.require_key else []
    reasons += ["payload_mismatch"] if r.on_payload_mismatch == "reject" else []
    reasons += ["backpressure"] if r.queued else []
    reasons += ["source_not_allowed"] if r.allow_from else []
    reasons += ["rate_limited"] if r.ingress_rate is not None else []
    reasons += ["client_certificate_required", "client_certificate_not_allowed"] * bool(
        r.client_subjects
    )
    out += [(m.rejected, (r.name, reason)) for reason in reasons]
    sources = sorted({k.kind for k in r.keys} | {"sha256"})
    out += [(m.duplicates, (r.name, source)) for source in sources]
    out += [(m.mismatches, (r.name,))]
    if r.dedupe == "shadow":
        out += [(m.shadow_duplicates, (r.name, source)) for source in sources]
        out += [(m.shadow_mismatches, (r.name,))]
    if r.verify is not None:
        out += [(m.signature_failures, (r.name, why)) for why in _SIGNATURE_REASONS]
    out += [(m.filtered, (r.name, rule.name, rule.action)) for rule in r.filters]
    if r.handshake is not None:
        provider = r.handshake.provider
        out += [(m.handshakes, (r.name, provider, o)) for o in ("answered", "refused")]
    return out


def _delivery_series(m: Metrics, r: Route) -> Series:
    if not r.queued:
        return []
    out: Series = [
        (m.attempts, (r.name, result, status))
        for result, status in (("delivered", "2xx"), ("retry", "5xx"), ("retry", "error"))
    ]
    if r.breaker is not None:
        out += [
            (m.breaker_transitions, (r.name, shown_url(url), to))
            for url in r.served
            for to in ("open", "half_open", "closed")
        ]
    out += [(m.stale, (r.name, r.stale.action))] if r.stale is not None else []
    if r.ordering is not None:
        out += [(m.ordering_dead_heads, (r.name, r.ordering.on_dead))]
    return out


def prime(metrics: Metrics, r: Route) -> None:
    """Every labelled counter a route can move, at 0 from the start: ``increase()``
    sees the first event after a start, and dashboards show 0 rather than no data."""
    for metric, labels in _intake_series(metrics, r) + _delivery_series(metrics, r):
        metric.labels(*labels)
