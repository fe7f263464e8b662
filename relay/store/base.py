"""The store contract, in domain terms.

Every backend (SQLite, PostgreSQL) implements ``Store``; the retry policy and
the decisions about states live above it, in ``relay.intake`` and
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

from typing import Final, Protocol

from relay.store.records import (
    DELIVERY_STATES,
    Acquired,
    Attempt,
    AttemptInfo,
    AuditEntry,
    Busy,
    Clock,
    Completed,
    DeliveryInfo,
    DeliveryState,
    EventFilter,
    EventInfo,
    Header,
    Ingested,
    Lease,
    NewEvent,
    Notice,
    Outcome,
    Pause,
    Preview,
    RecentAttempt,
    ReplicaInfo,
    RouteBacklog,
    StoredResponse,
    SyncClaim,
    SyncState,
    UpstreamCounts,
    new_token,
    replica_name,
)


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

    async def lease_delivery(
        self, route: str, upstream: str, event_id: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> Lease | None:
        """Lease the delivery of ``event_id`` to ``upstream`` if it is due and free to go
        (as ``lease_due`` would: ordering and pauses hold it); None otherwise. Hybrid
        mode sends it at once, in line with the sender's request."""

    async def store_answer(self, event_id: int, response: StoredResponse) -> None:
        """Keep a queued event's final answer (hybrid mode), for its duplicates."""

    async def stored_answer(self, event_id: int) -> StoredResponse | None:
        """The answer ``store_answer`` kept, if any."""

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


class Inspection(Protocol):
    """What the admin API and the console read: events, counts, replicas, the audit
    log, and previews (done and rolled back, so nothing changes)."""

    clock: Clock

    async def ping(self) -> bool:
        """True if the store answers."""

    async def pauses(self) -> list[Pause]:
        """Every pause in force (a route's has upstream "")."""

    # This process among those sharing the store; its lease and claim tokens start
    # with it, so the leases of a replica found dead can be returned at once.
    replica_id: str

    async def open_deliveries(self) -> dict[tuple[str, str], int]:
        """Deliveries pending or in flight per (route, upstream): what a reload
        that removed a route or an upstream leaves without a worker."""

    async def get_event(self, event_id: int) -> EventInfo | None: ...

    async def stored_answer(self, event_id: int) -> StoredResponse | None:
        """The answer kept for a sync or hybrid event (its duplicates get it), if any."""

    async def list_events(
        self, flt: EventFilter, limit: int, before_id: int | None = None
    ) -> list[EventInfo]:
        """Newest first; ``before_id`` pages on. Deliveries filled, attempts not."""

    async def preview_requeue(self, flt: EventFilter, *, force: bool = False) -> Preview:
        """What ``requeue`` (``requeue_all`` with ``force``) would do now, done and rolled back."""

    async def preview_purge(self, flt: EventFilter) -> Preview:
        """What ``purge`` would do now, done and rolled back."""

    async def audit_log(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        """Newest first; ``before_id`` pages on."""

    async def replicas(self) -> list[ReplicaInfo]:
        """Every registered replica, with the leases it holds."""

    async def backlog(self) -> dict[str, RouteBacklog]:
        """Per route with any: events pending, in flight and dead, and the oldest
        open one. Cheap enough for every scrape (grouped counts over an index)."""

    async def upstream_counts(self) -> list[UpstreamCounts]:
        """Per (route, upstream) with any: deliveries pending, in flight, dead, stale."""

    async def recent_attempts(self, after_id: int, limit: int) -> list[RecentAttempt]:
        """Attempts with an id above ``after_id``, newest first, at most ``limit``."""


class Operations(Protocol):
    """What an operator's action changes: replays, purges, pauses, and the audit entry
    each of them writes."""

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

    async def pause(self, route: str, upstream: str, reason: str | None) -> bool:
        """Pause a route (``upstream`` empty) or one upstream; False if it already was."""

    async def resume(self, route: str, upstream: str) -> int:
        """Resume one upstream, or (``upstream`` empty) the route and every upstream of
        it; how many pauses ended."""

    async def add_audit(self, entry: AuditEntry) -> int:
        """Write one audit entry; its id."""


class Upkeep(Protocol):
    """What housekeeping and start-up do: recovery, expiry, retention, caps, liveness."""

    clock: Clock
    # Set by housekeeping while a storage cap refuses new events (the reason).
    full: str | None
    # This process among those sharing the store; its lease and claim tokens start
    # with it, so the leases of a replica found dead can be returned at once.
    replica_id: str

    async def recover(self) -> int:
        """At start-up: return to pending every lease no live process can hold; how many.

        A backend that is shared by replicas can only tell by expiry; SQLite is
        one process per file (it holds a lock), so every lease in it is orphaned.
        """

    async def release_expired_leases(self) -> int:
        """Return deliveries whose lease expired to ``pending``; how many."""

    async def undelivered_counts(self) -> dict[str, int]:
        """Per route, events with a delivery still pending or in flight."""

    async def purge_expired(self, seen_before: float, dead_before: float, limit: int) -> int:
        """Delete up to ``limit`` finished events past retention; how many.

        An event goes when every delivery is delivered or stale and it was last
        seen before ``seen_before``, or when it has a dead delivery and was last
        seen before ``dead_before``. Sync events go when completed and last seen
        before ``seen_before``. Pending work is never purged.
        """

    async def drop_payloads(self, delivered_before: float, limit: int) -> int:
        """Drop bodies of events fully delivered before the given time; how many."""

    async def heartbeat(self) -> bool:
        """Register this process, or say it is alive; False if it had been declared dead
        meanwhile (its leases were returned; it is registered again)."""

    async def deregister(self) -> None:
        """A clean stop: this process leaves the replicas."""

    async def usage(self) -> int:
        """Bytes the store takes (SQLite: its pages in use; PostgreSQL: its tables)."""

    async def count_events(self) -> int: ...

    async def cap_bodies(self, after_id: int, limit: int) -> tuple[int | None, int, int]:
        """A storage cap: up to ``limit`` finished events after ``after_id``, oldest first,
        lose their bodies and attempts (their keys stay): the last id (None: none was
        left), how many, and about how many bytes that was."""

    async def cap_events(self, seen_before: float | None, limit: int) -> tuple[int, int]:
        """A storage cap: up to ``limit`` finished events, oldest first, go whole (their
        keys too), only those last seen before ``seen_before`` unless it is None: how
        many, and about how many bytes."""

    async def give_back(self, pages: int) -> int:
        """Return up to ``pages`` free pages to the filesystem; the bytes returned."""

    async def reap_dead_replicas(self, dead_before: float) -> list[tuple[ReplicaInfo, int]]:
        """Replicas whose heartbeat is older than ``dead_before``: their leases go back
        to pending (the lost attempt counted) and their sync claims are freed, at once,
        and they leave the replicas; each with how many deliveries it held."""


class Keys(Protocol):
    """Encryption at rest (``storage.encryption``): which keys the store has used,
    and moving what older keys sealed to the current one (``rekey``)."""

    async def key_ids(self) -> list[str]:
        """Every key id that has sealed something here and was not forgotten since."""

    async def reseal(self, table: str, after_id: int, limit: int) -> tuple[int | None, int]:
        """Up to ``limit`` rows of ``table`` (``RESEALED``) after ``after_id``: each value
        not sealed by the current key sealed by it (in clear without one). The last id
        read (None: nothing was left) and how many rows changed."""

    async def high_water(self, table: str) -> int:
        """The highest id in ``table`` now (0: empty): where a rekey pass may stop, as
        every row written after it began is sealed by the current key already."""

    async def forget_keys(self) -> list[str]:
        """After a whole pass of ``reseal``: every key id but the current one leaves the
        store's record (a start without them is no longer refused); which."""


# What ``reseal`` rewrites: each table's id, then its sealed columns in order.
RESEALED: Final = ("events", "attempts")


class Notices(Protocol):
    """Notifications (``notify:``): whether a condition's message is due, decided in the
    store, so workers and replicas send one per condition per interval between them."""

    async def notice_fire(
        self, target: str, condition: str, now: float, interval: float, summary: str
    ) -> str | None:
        """``condition`` fires: "firing" (it has just started), "reminder" (an interval
        passed since the last message) or None (not due, or another process sends it)."""

    async def notice_resolve(self, target: str, condition: str, now: float, summary: str) -> bool:
        """``condition`` cleared: True if a message saying so is due (once)."""

    async def notice_unsend(self, target: str, condition: str, active: bool) -> None:
        """A message that could not be sent: due again at once."""

    async def notices_active(self, target: str) -> list[str]:
        """The conditions whose last message to ``target`` said they fire."""

    async def notices_recent(self, limit: int) -> list[Notice]: ...


class Store(DeliveryStore, Inspection, Operations, Upkeep, Keys, Notices, Protocol):
    """Durable home of events, deliveries and sync claims: the hot path, and the
    inspection, operations and upkeep that only the store's owner does. Every backend
    implements all of it; each caller names the part it uses."""


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
    "Inspection",
    "Lease",
    "NewEvent",
    "Operations",
    "Outcome",
    "Pause",
    "Preview",
    "RecentAttempt",
    "ReplicaInfo",
    "RouteBacklog",
    "Store",
    "StoredResponse",
    "SyncClaim",
    "SyncState",
    "Upkeep",
    "UpstreamCounts",
    "new_token",
    "replica_name",
]
