"""The configuration's frozen dataclasses (what ``config.load`` returns)."""

from __future__ import annotations

import hmac
import ipaddress
import re
from dataclasses import dataclass, field
from typing import Final, Literal

from relay.config.filters import FilterRule
from relay.keys import KeySource
from relay.retry import RetryPolicy
from relay.signatures import DEFAULT_HEADERS, URL_SIGNED

Mode = Literal["queue", "sync", "hybrid"]
Dedupe = Literal["enforce", "shadow"]
OnDead = Literal["skip", "hold"]
IngressPer = Literal["route", "source"]
CapPolicy = Literal["keep_keys", "drop_keys"]
NotifyFormat = Literal["json", "slack"]
ClientAuth = Literal["none", "optional", "require"]
StaleAction = Literal["drop", "deliver"]
Encoding = Literal["hex", "base64"]
OnMismatch = Literal["accept", "reject"]
LogFormat = Literal["auto", "json", "console"]
# The choices each setting takes, typed as its Literal (the config reads them with these).
MODES: tuple[Mode, ...] = ("queue", "sync", "hybrid")
DEDUPE: tuple[Dedupe, ...] = ("enforce", "shadow")
ON_DEAD: tuple[OnDead, ...] = ("skip", "hold")
STALE_ACTIONS: tuple[StaleAction, ...] = ("drop", "deliver")
INGRESS_PER: tuple[IngressPer, ...] = ("route", "source")
CAP_POLICIES: tuple[CapPolicy, ...] = ("keep_keys", "drop_keys")
NOTIFY_FORMATS: tuple[NotifyFormat, ...] = ("json", "slack")
CLIENT_AUTH: tuple[ClientAuth, ...] = ("none", "optional", "require")
ENCODINGS: tuple[Encoding, ...] = ("hex", "base64")
ON_MISMATCH: tuple[OnMismatch, ...] = ("accept", "reject")
LOG_FORMATS: tuple[LogFormat, ...] = ("auto", "json", "console")
SCHEMES = tuple(DEFAULT_HEADERS)
ROUTE_NAME = re.compile(r"[A-Za-z0-9_.-]+")
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
DEFAULT_METHODS = ("POST",)
# The webhook listener's readiness probe, for load balancers: no route may take it.
READYZ_PATH = "/readyz"


Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True, slots=True)
class Listen:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def loopback_only(self) -> bool:
        if self.host == "localhost":
            return True
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return False


@dataclass(frozen=True, slots=True)
class ListenerTLS:
    """A listener's certificate chain and key, and the CA its clients' certificates
    must chain to (mutual TLS) if any."""

    cert_file: str
    key_file: str | None = None  # None: the key is in cert_file
    client_ca_file: str | None = None
    client_auth: ClientAuth = "none"
    # The files' bytes hashed when read: a reload after a rotation is a change.
    digest: str = ""


Role = Literal["read", "operate"]
ROLES: tuple[Role, ...] = ("read", "operate")
TOKEN_LABEL: Final = re.compile(r"[A-Za-z0-9_-]{1,40}")
# A token for a listener beyond loopback: about 192 bits of a base64url alphabet.
MIN_TOKEN_CHARS: Final = 32


@dataclass(frozen=True, slots=True)
class AdminToken:
    """A bearer token and what it may do; the audit log names its label, never it."""

    label: str
    role: Role
    secret: str = field(repr=False)

    @property
    def operates(self) -> bool:
        return self.role == "operate"


@dataclass(frozen=True, slots=True)
class AdminConfig:
    listen: Listen = Listen("127.0.0.1", 9090)
    tokens: tuple[AdminToken, ...] = field(default=(), repr=False)
    # Host names the listener answers to besides IP literals and localhost.
    allowed_hosts: tuple[str, ...] = ()
    tls: ListenerTLS | None = None

    @property
    def token_required(self) -> bool:
        return bool(self.tokens)

    def holder(self, given: str) -> AdminToken | None:
        """The token ``given`` is, compared in constant time against every one (so
        neither a token nor which of them matched can be timed out byte by byte)."""
        found = None
        for token in self.tokens:
            if hmac.compare_digest(given.encode(), token.secret.encode()):
                found = token
        return found


@dataclass(frozen=True, slots=True)
class Encryption:
    """Keys (32 bytes each) that seal what the store writes: ``current`` seals (None:
    writes go in clear, e.g. while encryption is being turned off), ``old`` still open."""

    current: bytes | None = field(repr=False)
    old: tuple[bytes, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    # May hold a database password (from storage.url_env/_file/_credential): no repr.
    url: str = field(default="sqlite:///data/relay.db", repr=False)
    dedupe_window: float = 7 * 86400.0
    dead_retention: float = 30 * 86400.0
    payload_retention: float | None = None  # drop delivered bodies after this long
    cleanup_interval: float = 60.0
    # The first bytes of each attempt's answer kept for the console (0: none).
    answer_bytes: int = 1024
    encryption: Encryption | None = None
    # Below this much free space on a SQLite store's filesystem, ingest answers 503:
    # a size, or (``min_free_ratio`` > 0) a share of the filesystem.
    min_free: int = 100 * 1024 * 1024
    min_free_ratio: float = 0.0
    # Caps on what the store keeps (None: none): finished bodies and attempts go
    # first, then finished events past their dedupe window, then (drop_keys) the rest.
    max_bytes: int | None = None
    max_rows: int | None = None
    cap_policy: CapPolicy = "keep_keys"


@dataclass(frozen=True, slots=True)
class TracingConfig:
    """OpenTelemetry (the ``otel`` extra); exporter and sampler from the OTEL_* variables."""

    enabled: bool = False
    # A sender's traceparent is a stranger's: used as the parent only when trusted.
    trust_incoming: bool = False


@dataclass(frozen=True, slots=True)
class Limits:
    max_body: int = 1024 * 1024
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    max_connections: int = 1024
    # The request head's header lines, names and values: past it, 431.
    max_header_bytes: int = 64 * 1024


@dataclass(frozen=True, slots=True)
class AckConfig:
    status: int = 202
    body: str | None = None  # None: a small JSON body naming the event id
    content_type: str = "application/json"


@dataclass(frozen=True, slots=True)
class Timeouts:
    connect: float = 5.0
    total: float = 30.0


@dataclass(frozen=True, slots=True)
class SyncConfig:
    wait: float = 30.0  # how long a duplicate waits for the in-flight original
    lease: float = 60.0  # a claim older than this is presumed dead and taken over
    max_stored_body: int = 1024 * 1024
    busy_retry_after: float = 5.0


@dataclass(frozen=True, slots=True)
class HybridConfig:
    """``mode: hybrid``: commit first, then forward at once and give the sender the
    backend's final answer if it comes within ``wait``, else the queue's ack."""

    wait: float = 2.0


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    """A circuit breaker per (route, upstream): after ``failures`` retryable failures in a
    row nothing is sent but one probe per ``probe_interval``; once a probe succeeds the
    allowed concurrency ramps from 1 to ``concurrency`` over ``ramp``."""

    failures: int = 5
    probe_interval: float = 5.0
    ramp: float = 10.0


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket per upstream: ``rate`` attempts a second, at most ``burst`` at once."""

    rate: float
    burst: int


@dataclass(frozen=True, slots=True)
class IngressRate:
    """A token bucket in front of a route: ``rate`` webhooks a second, at most ``burst``
    at once, for the whole route or for each source address."""

    rate: float
    burst: int
    per: IngressPer = "route"


@dataclass(frozen=True, slots=True)
class OrderingConfig:
    """Per-key ordering: deliveries sharing a key go one at a time, in arrival order."""

    keys: tuple[KeySource, ...]  # the first source present wins; none present: unordered
    on_dead: OnDead = "skip"  # a dead head: go on, or hold the key


@dataclass(frozen=True, slots=True)
class StaleConfig:
    """Stale suppression: an event not newer than the last delivered of its key is dropped."""

    version: KeySource
    action: StaleAction = "drop"  # deliver: only log and count
    equal_is_stale: bool = False


@dataclass(frozen=True, slots=True)
class HandshakeConfig:
    """The provider's URL check the relay answers itself (the route's preset names it);
    Meta's carries a verify token the operator chose."""

    provider: str
    verify_tokens: tuple[str, ...] = field(default=(), repr=False)


@dataclass(frozen=True, slots=True)
class VerifyConfig:
    scheme: str
    secrets: tuple[str, ...] = field(repr=False)
    tolerance: float = 300.0
    header: str | None = None  # hmac-sha256 only
    encoding: Encoding = "hex"
    prefix: str = ""


@dataclass(frozen=True, slots=True)
class UpstreamTLS:
    """A private CA to verify the backend with, a client certificate to show it."""

    ca_file: str | None = None
    cert_file: str | None = None
    key_file: str | None = None
    server_name: str | None = None  # the name to verify (and send as SNI) if not the URL's
    # The files' bytes hashed when read: a reload after a rotation is a change.
    digest: str = ""


@dataclass(frozen=True, slots=True)
class Upstream:
    """An upstream given as an object: what every request to it carries."""

    url: str
    name: str | None = None
    # Added to each request (auth among them), replacing the sender's of the same
    # name; secrets: never stored with the event, logged or shown.
    headers: tuple[tuple[str, str], ...] = field(default=(), repr=False)
    tls: UpstreamTLS | None = None


@dataclass(frozen=True, slots=True)
class Route:
    name: str
    path: str
    upstreams: tuple[str, ...]
    mode: Mode = "queue"
    methods: tuple[str, ...] = DEFAULT_METHODS
    preset: str | None = None
    keys: tuple[KeySource, ...] = (KeySource("header", "Idempotency-Key"), KeySource("sha256"))
    require_key: bool = False
    on_payload_mismatch: OnMismatch = "accept"
    key_header: str = "Idempotency-Key"  # the header carrying the key upstream
    ack: AckConfig = AckConfig()
    verify: VerifyConfig | None = None
    resign: bool = False
    retry: RetryPolicy = RetryPolicy()
    timeout: Timeouts = Timeouts()
    concurrency: int = 16
    max_pending: int = 100_000
    revive_dead: bool = True
    sync: SyncConfig = SyncConfig()
    ordering: OrderingConfig | None = None
    stale: StaleConfig | None = None
    breaker: BreakerConfig | None = BreakerConfig()  # None: off
    rate_limit: RateLimit | None = None
    hybrid: HybridConfig = HybridConfig()
    dedupe: Dedupe = "enforce"
    # The settings of upstreams and alternates given as objects (a bare URL has none).
    endpoints: tuple[Upstream, ...] = ()
    # Named upstreams a filter may send an event to instead of ``upstreams``.
    alternates: tuple[str, ...] = ()
    # Ordered: the first rule whose condition holds drops or reroutes the event.
    filters: tuple[FilterRule, ...] = ()
    handshake: HandshakeConfig | None = None
    # The URL senders call, as they see it (before any proxy): Twilio and Square sign it.
    public_url: str | None = None
    # Sources allowed to post (empty: anyone); a trusted proxy's client is judged.
    allow_from: tuple[Network, ...] = ()
    ingress_rate: IngressRate | None = None
    # Client certificates (mutual TLS) that may post, by subject CN or SAN (empty: any).
    client_subjects: tuple[str, ...] = ()

    @property
    def served(self) -> tuple[str, ...]:
        """Every URL this route may deliver to: its upstreams, then its alternates."""
        return self.upstreams + self.alternates

    @property
    def provider(self) -> str | None:
        """The provider whose URL check the route answers (its preset's), if any."""
        return None if self.handshake is None else self.handshake.provider

    @property
    def queued(self) -> bool:
        """Stored and delivered by the queue (queue and hybrid modes), not forwarded in line."""
        return self.mode != "sync"


@dataclass(frozen=True, slots=True)
class NotifyTarget:
    """Where notifications go (``notify:``); the URL is a secret, never shown."""

    url: str = field(repr=False)
    name: str = "notify-0"
    format: NotifyFormat = "json"
    interval: float = 15 * 60.0  # at most one message per condition this often
    backlog_age: float = 10 * 60.0  # the oldest undelivered event older than this fires


@dataclass(frozen=True, slots=True)
class LogConfig:
    level: str = "info"
    format: LogFormat = "auto"


@dataclass(frozen=True, slots=True)
class Config:
    routes: tuple[Route, ...]
    listen: Listen = Listen("0.0.0.0", 8080)
    tls: ListenerTLS | None = None
    admin: AdminConfig = AdminConfig()
    storage: StorageConfig = StorageConfig()
    limits: Limits = Limits()
    log: LogConfig = LogConfig()
    tracing: TracingConfig = TracingConfig()
    # On SIGTERM, readyz fails first and serving goes on this long (Connection: close),
    # so a load balancer moves senders away before the listener closes.
    drain_delay: float = 5.0
    shutdown_grace: float = 25.0
    # Worker processes serving the public listener and delivering; 0 = all in one process.
    workers: int = 0
    # Peers whose X-Forwarded-*, Forwarded and X-Real-IP are believed (and extended).
    trusted_proxies: tuple[Network, ...] = ()
    notify: tuple[NotifyTarget, ...] = ()

    def warnings(self) -> tuple[str, ...]:
        """What is valid but probably not meant: said by check-config and at start."""
        unsigned = tuple(
            f"route {r.name!r}: preset {r.preset!r} but no verify: section, so unsigned"
            " (forged) events are accepted; add verify: {secret_env: ...} with the"
            " sender's signing secret"
            for r in self.routes
            if r.preset is not None and r.verify is None
        )
        guessed = tuple(
            f"route {r.name!r}: {r.verify.scheme} signs the URL the sender called; without"
            " public_url it is rebuilt from the request (its Host, or the X-Forwarded-*"
            " of a trusted proxy), which a proxy in between may change"
            for r in self.routes
            if r.verify is not None and r.verify.scheme in URL_SIGNED and r.public_url is None
        )
        return unsigned + guessed
