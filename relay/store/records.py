"""The store's records: what goes in, what comes out, in domain terms (frozen, no I/O).

``relay.store.base`` holds the contract over them and re-exports them.
"""

from __future__ import annotations

import os
import secrets
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

Clock = Callable[[], float]

DeliveryState = Literal["pending", "in_flight", "delivered", "dead", "stale", "filtered"]
DELIVERY_STATES: tuple[DeliveryState, ...] = (
    "pending",
    "in_flight",
    "delivered",
    "dead",
    "stale",
    "filtered",
)
# What a bulk replay puts back to pending: dead and stale unless one state is named
# (filtered ones only when asked for: a filter dropped them on purpose).
REPLAYABLE: tuple[DeliveryState, ...] = ("dead", "stale", "filtered")
# Sync-mode events carry their own state: claimed and being forwarded, or done.
SyncState = Literal["in_flight", "completed"]
Header = tuple[str, str]


def new_token() -> str:
    """A fencing token for a lease or a claim: random, so no two holders share one."""
    return secrets.token_hex(16)


def replica_name() -> str:
    """This process's id among the replicas sharing a store: host, pid and a random
    part (a pid is reused after a restart; the random part is not)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


@dataclass(frozen=True, slots=True)
class ReplicaInfo:
    """A relay process registered in the store, and the leases it holds now."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_at: float
    leases: int = 0


@dataclass(frozen=True, slots=True)
class NewEvent:
    """A webhook as received, ready to be claimed."""

    route: str
    key: str
    key_source: str  # e.g. "header:X-GitHub-Delivery" or "sha256"
    fingerprint: str  # hex SHA-256 of the body
    method: str
    path: str
    query: str  # raw query string, without "?"
    headers: tuple[Header, ...]
    body: bytes
    received_at: float
    # Queue mode: one delivery is created per upstream URL. Empty in sync mode.
    upstreams: tuple[str, ...] = ()
    # Queue mode: a duplicate of an event whose deliveries are all dead revives them.
    revive_dead: bool = True
    ordering_key: str | None = None
    version: str | None = None
    trace: str | None = None  # the ingest span's traceparent (tracing.enabled)
    # The filter rule that dropped it: its deliveries are stored ``filtered``, not sent.
    filtered: str | None = None


@dataclass(frozen=True, slots=True)
class Ingested:
    """What ``ingest`` did with one event."""

    event_id: int
    first: bool  # this call created the event; False: (route, key) was seen before
    stored_fingerprint: str  # fingerprint of the event first stored under this key
    revived: int = 0  # dead deliveries returned to pending by this duplicate
    stored_trace: str | None = None  # the first copy's traceparent, for a duplicate's link

    def mismatch(self, fingerprint: str) -> bool:
        return not self.first and fingerprint != self.stored_fingerprint


@dataclass(frozen=True, slots=True)
class StoredResponse:
    """An upstream's final answer in sync mode, replayed to duplicates."""

    status: int
    content_type: str | None
    body: bytes
    body_omitted: bool = False  # the body was over the route's cap and not kept


@dataclass(frozen=True, slots=True)
class Acquired:
    """This caller holds the sync claim and must complete or release it."""

    event_id: int
    token: str
    taken_over: bool  # a previous holder's lease had expired


@dataclass(frozen=True, slots=True)
class Completed:
    """The key was already answered; replay this response (None: the event was stored
    by queue mode, before the route's mode changed, and has no answer to replay)."""

    event_id: int
    fingerprint: str
    response: StoredResponse | None
    trace: str | None = None  # the first copy's traceparent


@dataclass(frozen=True, slots=True)
class Busy:
    """Another holder's lease is live; wait for it or answer 409."""

    event_id: int
    fingerprint: str
    lease_expires: float
    trace: str | None = None  # the first copy's traceparent


SyncClaim = Acquired | Completed | Busy


@dataclass(frozen=True, slots=True)
class Lease:
    """A delivery leased to this process for one attempt."""

    delivery_id: int
    event_id: int
    token: str
    route: str
    upstream: str
    attempts: int  # attempts made before this one
    # Start of the retry window (max_age): when the delivery was created, or
    # last revived or requeued, so a replayed old event gets a fresh window.
    received_at: float
    key: str
    method: str
    path: str
    query: str
    headers: tuple[Header, ...]
    body: bytes
    ordering_key: str | None = None
    version: str | None = None
    # When the lease runs out (store clock): past it another holder may lease
    # the delivery, so an attempt must not start unless it can end before.
    expires: float = float("inf")
    # Stale suppression: the highest version delivered so far for this
    # delivery's (route, upstream, ordering key), read in the leasing
    # transaction. Per-key ordering leases one delivery of a key at a time, so
    # it cannot change before this lease is finished.
    delivered_version: str | None = None
    trace: str | None = None  # the event's ingest span (tracing): attempts are its children


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at an upstream, for the attempt log."""

    started_at: float
    duration_ms: float
    status: int | None  # upstream HTTP status, None when there was none
    error: str | None  # "timeout", "connect: ...", None on an HTTP answer
    # The first bytes of the upstream's answer (storage.answer_bytes), for the console.
    answer: bytes | None = None


@dataclass(frozen=True, slots=True)
class Outcome:
    """Where a delivery goes after an attempt."""

    state: Literal["delivered", "pending", "dead", "stale"]
    next_attempt_at: float | None = None  # for "pending"
    reason: str | None = None  # for "dead" and "stale"


@dataclass(frozen=True, slots=True)
class DeliveryInfo:
    id: int
    upstream: str
    state: DeliveryState
    attempts: int
    next_attempt_at: float | None
    last_status: int | None
    last_error: str | None
    reason: str | None
    updated_at: float


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    delivery_id: int
    started_at: float
    duration_ms: float
    status: int | None
    error: str | None
    answer: bytes | None = None  # the answer's first bytes; None once payloads were dropped
    id: int = 0


@dataclass(frozen=True, slots=True)
class RecentAttempt:
    """An attempt of any event, newest first, for the console's tail and overview."""

    id: int
    event_id: int
    route: str
    upstream: str
    started_at: float
    duration_ms: float
    status: int | None
    error: str | None


@dataclass(frozen=True, slots=True)
class EventInfo:
    """An event as the admin API shows it."""

    id: int
    route: str
    key: str
    key_source: str
    fingerprint: str
    received_at: float
    last_seen_at: float
    duplicates: int
    mismatches: int
    method: str
    path: str
    query: str
    headers: tuple[Header, ...]
    body: bytes | None  # None once dropped by payload retention
    sync_state: SyncState | None  # None for queue-mode events
    deliveries: tuple[DeliveryInfo, ...] = ()
    attempts: tuple[AttemptInfo, ...] = field(default=())
    first_duplicate_at: float | None = None  # when the first duplicate came, if one did


@dataclass(frozen=True, slots=True)
class RouteBacklog:
    """Work of one route not delivered yet, for the gauges and the status page.

    Counts are events with at least one delivery in that state (a fan-out
    event pending on two upstreams counts once).
    """

    route: str
    pending: int = 0
    in_flight: int = 0
    dead: int = 0
    oldest_open_at: float | None = None  # received_at of the oldest event pending or in flight


@dataclass(frozen=True, slots=True)
class UpstreamCounts:
    """Deliveries of one (route, upstream) per state that needs a look (not delivered)."""

    route: str
    upstream: str
    pending: int = 0
    in_flight: int = 0
    dead: int = 0
    stale: int = 0


@dataclass(frozen=True, slots=True)
class Pause:
    """A paused route (``upstream`` empty: all of its upstreams) or one upstream of it."""

    route: str
    upstream: str
    since: float
    reason: str | None = None

    def covers(self, route: str, upstream: str) -> bool:
        return self.route == route and self.upstream in ("", upstream)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One change an operator made: a replay, a purge, a pause or a resume."""

    at: float
    action: str  # replay, replay_bulk, purge, pause, resume
    target: str  # JSON: the event id, the filter, or route and upstream
    affected: int  # deliveries requeued, events purged, pauses changed
    credential: str  # admin_token, or loopback (no token configured)
    reason: str | None = None
    client: str | None = None  # the caller's User-Agent, as sent
    id: int = 0  # given by the store


@dataclass(frozen=True, slots=True)
class Preview:
    """What a bulk change would do, counted by doing it and rolling it back."""

    count: int  # deliveries requeued, or events purged: what the real call returns
    routes: tuple[tuple[str, int], ...] = ()  # the same count per route
    events: int = 0  # the events they belong to


@dataclass(frozen=True, slots=True)
class EventFilter:
    route: str | None = None
    state: DeliveryState | None = None  # events with at least one delivery in this state
    key: str | None = None
    since: float | None = None  # received_at >= since
    until: float | None = None  # received_at < until
    ids: tuple[int, ...] | None = None

    def replay_states(self) -> list[DeliveryState]:
        """What a replay puts back to pending: the state asked for; else dead and stale,
        and filtered too for events named by id (an operator picked each of them)."""
        if self.state in REPLAYABLE:
            return [self.state]
        return list(REPLAYABLE) if self.ids is not None else ["dead", "stale"]


@dataclass(frozen=True, slots=True)
class Notice:
    """A notification's last message for one target and condition (``notify:``)."""

    target: str
    condition: str
    active: bool  # the last message said it fires (False: it said it cleared)
    since: float
    sent_at: float
    summary: str
