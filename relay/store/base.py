"""The store contract, in domain terms.

Every backend (SQLite, PostgreSQL) implements ``Store``; the retry policy and
the decisions about states live above it, in ``ingress``, ``sync`` and
``dispatcher``. Times are UNIX seconds as floats, taken from the store's
``clock`` so tests can move time without sleeping. Replicas sharing one
database judge each other's leases by their own clocks, so those clocks must
agree (NTP) to well within a lease.

Invariants a backend must keep (DESIGN.md):

* ``ingest`` returns only after the event is durably committed, and claims
  ``(route, key)`` with one atomic insert-or-conflict, never check-then-insert.
* Every change to a leased row is fenced by its lease token, so a holder whose
  lease expired cannot overwrite a newer holder's result.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

Clock = Callable[[], float]

DeliveryState = Literal["pending", "in_flight", "delivered", "dead", "stale"]
DELIVERY_STATES: tuple[DeliveryState, ...] = ("pending", "in_flight", "delivered", "dead", "stale")
# Sync-mode events carry their own state: claimed and being forwarded, or done.
SyncState = Literal["in_flight", "completed"]
Header = tuple[str, str]


def new_token() -> str:
    """A fencing token for a lease or a claim: random, so no two holders share one."""
    return secrets.token_hex(16)


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


@dataclass(frozen=True, slots=True)
class Ingested:
    """What ``ingest`` did with one event."""

    event_id: int
    first: bool  # this call created the event; False: (route, key) was seen before
    stored_fingerprint: str  # fingerprint of the event first stored under this key
    revived: int = 0  # dead deliveries returned to pending by this duplicate

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
    """The key was already answered; replay this response."""

    event_id: int
    fingerprint: str
    response: StoredResponse


@dataclass(frozen=True, slots=True)
class Busy:
    """Another holder's lease is live; wait for it or answer 409."""

    event_id: int
    fingerprint: str
    lease_expires: float


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


@dataclass(frozen=True, slots=True)
class Attempt:
    """One try at an upstream, for the attempt log."""

    started_at: float
    duration_ms: float
    status: int | None  # upstream HTTP status, None when there was none
    error: str | None  # "timeout", "connect: ...", None on an HTTP answer


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


@dataclass(frozen=True, slots=True)
class EventFilter:
    route: str | None = None
    state: DeliveryState | None = None  # events with at least one delivery in this state
    key: str | None = None
    since: float | None = None  # received_at >= since
    until: float | None = None  # received_at < until
    ids: tuple[int, ...] | None = None


class DeliveryStore(Protocol):
    """The hot path: what a process that ingests and delivers calls, and all that a
    worker process (``relay.store.remote``) can reach."""

    clock: Clock

    async def open(self) -> None:
        """Connect, apply pending schema migrations, get ready to serve."""

    async def close(self) -> None:
        """Flush pending batches and close; safe to call twice."""

    async def ping(self) -> bool:
        """True if the store answers."""

    # --- queue mode -----------------------------------------------------------

    async def ingest(self, event: NewEvent) -> Ingested:
        """Claim (route, key) and persist the event and its deliveries; return after commit.

        Concurrent callers may share one transaction (group commit). Raises
        ``StoreUnavailable`` when the commit fails: the caller must not ack.
        """

    async def lease_due(
        self, route: str, upstream: str, limit: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> list[Lease]:
        """Lease up to ``limit`` pending deliveries due now, oldest due first.

        Per-key ordering: a delivery with an ordering key is not leased while
        an earlier event with that key has a delivery to the same upstream
        pending or in flight, or while any other delivery of that key and
        upstream is in flight (at most one of a key is ever leased, by any of
        the replicas sharing the store). With ``hold_dead`` an earlier dead
        delivery of the key blocks it too.
        """

    async def next_due_at(
        self, route: str, upstream: str, *, hold_dead: bool = False
    ) -> float | None:
        """When the earliest pending delivery of this upstream that ordering
        lets go becomes due."""

    async def finish_attempt(self, lease: Lease, attempt: Attempt | None, outcome: Outcome) -> bool:
        """Log the attempt and move the delivery; False if the lease was lost (fenced).

        ``attempt`` None: nothing was sent (a stale event dropped, or a lease
        given back unused); the attempt count and log are left alone. A
        delivery moved to ``delivered`` that has an ordering key and a version
        raises the key's remembered highest version in the same transaction.
        """

    # --- sync mode ------------------------------------------------------------

    async def claim_sync(self, event: NewEvent, lease_ttl: float) -> SyncClaim:
        """Claim the key for forwarding now, or report who has it."""

    async def peek_sync(self, route: str, key: str) -> SyncClaim | None:
        """The current state of a sync key without claiming it; None if free."""

    async def complete_sync(self, event_id: int, token: str, response: StoredResponse) -> bool:
        """Store the final response; False if the lease was lost."""

    async def release_sync(self, event_id: int, token: str) -> bool:
        """Forget the claim so the sender's retry is processed afresh."""

    # --- protecting the backend -----------------------------------------------

    async def pauses(self) -> list[Pause]:
        """Every paused route and upstream (``lease_due`` leaves their deliveries alone)."""

    async def make_due(self, route: str, upstream: str) -> int:
        """Pending deliveries of this upstream scheduled for later become due now (its
        breaker opened or closed: the backoffs of single deliveries no longer say
        anything); how many. Nothing is charged an attempt."""

    async def count_due(self, route: str, upstream: str) -> int:
        """Pending deliveries of this upstream that are due now."""


class Store(DeliveryStore, Protocol):
    """Durable home of events, deliveries and sync claims: the hot path, and the
    inspection and maintenance that only the store's owner does."""

    # --- recovery and backpressure ----------------------------------------------

    async def recover(self) -> int:
        """At start-up: return to pending every lease no live process can hold; how many.

        A backend that is shared by replicas can only tell by expiry; SQLite is
        one process per file (it holds a lock), so every lease in it is orphaned.
        """

    async def release_expired_leases(self) -> int:
        """Return deliveries whose lease expired to ``pending``; how many."""

    async def undelivered_counts(self) -> dict[str, int]:
        """Per route, events with a delivery still pending or in flight."""

    # --- inspection and replay ----------------------------------------------------

    async def get_event(self, event_id: int) -> EventInfo | None: ...

    async def list_events(
        self, flt: EventFilter, limit: int, before_id: int | None = None
    ) -> list[EventInfo]:
        """Newest first; ``before_id`` pages on. Deliveries filled, attempts not."""

    async def requeue(self, flt: EventFilter) -> int:
        """Put matching dead or stale deliveries back to pending, due now; how many."""

    async def requeue_all(self, flt: EventFilter) -> int:
        """A forced replay: every matching delivery not in flight, delivered ones
        too, back to pending, due now, with a fresh retry window; how many.

        Events whose payload was dropped (payload retention) are skipped: there
        is nothing left to forward.
        """

    async def purge(self, flt: EventFilter) -> int:
        """Delete matching events that have nothing pending or in flight; how many."""

    # --- retention ----------------------------------------------------------------

    async def purge_expired(self, seen_before: float, dead_before: float, limit: int) -> int:
        """Delete up to ``limit`` finished events past retention; how many.

        An event goes when every delivery is delivered or stale and it was last
        seen before ``seen_before``, or when it has a dead delivery and was last
        seen before ``dead_before``. Sync events go when completed and last seen
        before ``seen_before``. Pending work is never purged.
        """

    async def drop_payloads(self, delivered_before: float, limit: int) -> int:
        """Drop bodies of events fully delivered before the given time; how many."""

    async def preview_requeue(self, flt: EventFilter, *, force: bool = False) -> Preview:
        """What ``requeue`` (``requeue_all`` with ``force``) would do now, done and rolled back."""

    async def preview_purge(self, flt: EventFilter) -> Preview:
        """What ``purge`` would do now, done and rolled back."""

    # --- pauses and the audit log ---------------------------------------------------

    async def pause(self, route: str, upstream: str, reason: str | None) -> bool:
        """Pause a route (``upstream`` empty) or one upstream; False if it already was."""

    async def resume(self, route: str, upstream: str) -> int:
        """Resume one upstream, or (``upstream`` empty) the route and every upstream of
        it; how many pauses ended."""

    async def add_audit(self, entry: AuditEntry) -> int:
        """Write one audit entry; its id."""

    async def audit_log(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first; ``before_id`` pages on."""

    # --- observability ------------------------------------------------------------

    async def backlog(self) -> dict[str, RouteBacklog]:
        """Per route with any: events pending, in flight and dead, and the oldest
        open one. Cheap enough for every scrape (grouped counts over an index)."""

    async def open_deliveries(self) -> dict[tuple[str, str], int]:
        """Deliveries pending or in flight per (route, upstream): what a reload
        that removed a route or an upstream leaves without a worker."""


__all__ = [
    "DELIVERY_STATES",
    "Acquired",
    "Attempt",
    "AttemptInfo",
    "AuditEntry",
    "Busy",
    "Clock",
    "Completed",
    "DeliveryInfo",
    "DeliveryState",
    "DeliveryStore",
    "EventFilter",
    "EventInfo",
    "Header",
    "Ingested",
    "Lease",
    "NewEvent",
    "Outcome",
    "Pause",
    "Preview",
    "RouteBacklog",
    "Store",
    "StoredResponse",
    "SyncClaim",
    "SyncState",
    "new_token",
]
