"""SQL text and row mapping of the SQLite store's ingest, delivery and sync mode
(kept apart so ``store.py`` and ``sync.py`` read as the transaction
logic). The operations' statements are in ``ops_sql``; portable ones in
``relay.store.common_sql``."""

from __future__ import annotations

from collections.abc import Iterable
from functools import lru_cache
from typing import Any

from relay.store.base import (
    Attempt,
    Lease,
    NewEvent,
    Outcome,
)
from relay.store.common_sql import free_to_lease
from relay.store.rows import BODY, headers_json
from relay.store.sealing import Sealer


def marks(n: int) -> str:
    return ", ".join("?" * n)


# --- ingest -------------------------------------------------------------------

_EVENT_COLUMNS = (
    "route, key, key_source, fingerprint, received_at, last_seen_at, duplicates, mismatches,"
    " method, path, query, headers, body, ordering_key, version, claim_token, trace_context"
)
EVENT_PARAMS = 17


def event_params(
    event: NewEvent,
    now: float,
    duplicates: int,
    mismatches: int,
    claim_token: str,
    sealer: Sealer,
) -> list[Any]:
    return [
        event.route,
        event.key,
        event.key_source,
        event.fingerprint,
        event.received_at,
        now,
        duplicates,
        mismatches,
        event.method,
        event.path,
        event.query,
        headers_json(event.headers, sealer),
        sealer.seal(event.body, BODY),
        event.ordering_key,
        event.version,
        claim_token,
        event.trace,
    ]


@lru_cache(maxsize=64)
def ingest_events(rows: int) -> str:
    # On insert, duplicates/mismatches carry the batch's own extra copies; on
    # conflict excluded.duplicates adds them to the stored counts.
    values = ", ".join([f"({marks(EVENT_PARAMS)})"] * rows)
    return (
        f"INSERT INTO events ({_EVENT_COLUMNS}) VALUES {values}"
        " ON CONFLICT (route, key) DO UPDATE SET"
        " duplicates = duplicates + 1 + excluded.duplicates,"
        " last_seen_at = max(last_seen_at, excluded.last_seen_at),"
        " first_duplicate_at = coalesce(first_duplicate_at, excluded.last_seen_at),"
        " mismatches = mismatches + (fingerprint <> excluded.fingerprint)"
        " RETURNING id, route, key, fingerprint, claim_token, trace_context"
    )


DELIVERY_PARAMS = 9


@lru_cache(maxsize=64)
def insert_deliveries(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, 0, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO deliveries (event_id, route, upstream, ordering_key, state, attempts,"
        f" next_attempt_at, created_at, updated_at, reason) VALUES {values}"
    )


def delivery_params(
    rows: Iterable[tuple[int, str, str, str | None, str | None]], now: float
) -> list[Any]:
    params: list[Any] = []
    for event_id, route, upstream, ordering_key, filtered in rows:
        state, due = ("pending", now) if filtered is None else ("filtered", None)
        params += [event_id, route, upstream, ordering_key, state, due, now, now, filtered]
    return params


@lru_cache(maxsize=64)
def revive(events: int) -> str:
    # Only when every delivery of the event is dead: a partly delivered
    # fan-out is the operator's call (requeue), not the sender's.
    return (
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
        " reason = NULL, lease_token = NULL, lease_expires = NULL, updated_at = ?,"
        " created_at = ?"
        f" WHERE state = 'dead' AND event_id IN ({marks(events)})"
        " AND NOT EXISTS (SELECT 1 FROM deliveries AS o"
        "  WHERE o.event_id = deliveries.event_id AND o.state <> 'dead')"
        " RETURNING event_id"
    )


ADD_MISMATCHES = "UPDATE events SET mismatches = mismatches + ? WHERE id = ?"

UNDELIVERED_COUNTS = (
    "SELECT route, count(DISTINCT event_id) FROM deliveries"
    " WHERE state IN ('pending', 'in_flight') GROUP BY route"
)

# --- delivery -----------------------------------------------------------------


@lru_cache(maxsize=8)
def lease_due(hold_dead: bool, one_event: bool = False) -> str:
    """``one_event``: only the delivery of :event_id (hybrid mode's attempt in line)."""
    only = " AND d.event_id = :event_id" if one_event else ""
    return (
        "UPDATE deliveries SET state = 'in_flight', lease_token = :token || '.' || id,"
        " lease_expires = :expires, updated_at = :now"
        " WHERE id IN (SELECT d.id FROM deliveries AS d"
        "  WHERE d.route = :route AND d.upstream = :upstream AND d.state = 'pending'"
        f"  AND d.next_attempt_at <= :now AND {free_to_lease(hold_dead)}{only}"
        "  ORDER BY d.next_attempt_at, d.id LIMIT :limit)"
        " RETURNING id, event_id, route, upstream, ordering_key, attempts, lease_token,"
        " lease_expires, next_attempt_at, created_at"
    )


# Hybrid mode: the backend's final answer to a queued event, replayed to duplicates.
STORE_ANSWER = (
    "UPDATE events SET response_status = ?, response_content_type = ?, response_body = ?,"
    " response_body_omitted = ? WHERE id = ?"
)
STORED_ANSWER = (
    "SELECT response_status, response_content_type, response_body, response_body_omitted"
    " FROM events WHERE id = ? AND response_status IS NOT NULL"
)

MAKE_DUE = (
    "UPDATE deliveries SET next_attempt_at = :now, updated_at = :now"
    " WHERE route = :route AND upstream = :upstream AND state = 'pending'"
    " AND next_attempt_at > :now"
)
COUNT_DUE = (
    "SELECT count(*) FROM deliveries WHERE route = :route AND upstream = :upstream"
    " AND state = 'pending' AND next_attempt_at <= :now"
)


@lru_cache(maxsize=64)
def delivered_versions(keys: int) -> str:
    return (
        "SELECT ordering_key, version FROM delivered_versions"
        f" WHERE route = ? AND upstream = ? AND ordering_key IN ({marks(keys)})"
    )


DELIVERED_VERSION = (
    "SELECT version FROM delivered_versions WHERE route = ? AND upstream = ? AND ordering_key = ?"
)

SET_DELIVERED_VERSION = (
    "INSERT INTO delivered_versions (route, upstream, ordering_key, version, updated_at)"
    " VALUES (?, ?, ?, ?, ?) ON CONFLICT (route, upstream, ordering_key)"
    " DO UPDATE SET version = excluded.version, updated_at = excluded.updated_at"
)


@lru_cache(maxsize=64)
def lease_payloads(events: int) -> str:
    return (
        "SELECT id, key, received_at, method, path, query, headers, body, ordering_key, version,"
        f" trace_context FROM events WHERE id IN ({marks(events)})"
    )


@lru_cache(maxsize=4)
def next_due(hold_dead: bool) -> str:
    return (
        "SELECT min(d.next_attempt_at) FROM deliveries AS d"
        " WHERE d.route = :route AND d.upstream = :upstream AND d.state = 'pending'"
        f" AND {free_to_lease(hold_dead)}"
    )


FINISH_ATTEMPT = (
    "UPDATE deliveries SET state = :state, attempts = attempts + 1, lease_token = NULL,"
    " lease_expires = NULL, last_status = :status, last_error = :error, reason = :reason,"
    " next_attempt_at = :next, delivered_at = :delivered, updated_at = :now"
    " WHERE id = :id AND lease_token = :token AND state = 'in_flight'"
)


# Nothing was sent (a stale event dropped, a lease given back unused): the
# attempt count and the last status stay as they were.
FINISH_UNTRIED = (
    "UPDATE deliveries SET state = :state, lease_token = NULL, lease_expires = NULL,"
    " reason = :reason, next_attempt_at = :next, delivered_at = :delivered, updated_at = :now"
    " WHERE id = :id AND lease_token = :token AND state = 'in_flight'"
)


def finish_params(
    lease: Lease, attempt: Attempt | None, outcome: Outcome, now: float
) -> dict[str, Any]:
    pending = outcome.state == "pending"
    return {
        "state": outcome.state,
        "status": attempt.status if attempt is not None else None,
        "error": attempt.error if attempt is not None else None,
        "reason": outcome.reason if outcome.state in ("dead", "stale") else None,
        "next": (outcome.next_attempt_at if outcome.next_attempt_at is not None else now)
        if pending
        else None,
        "delivered": now if outcome.state == "delivered" else None,
        "now": now,
        "id": lease.delivery_id,
        "token": lease.token,
    }


# Group-committed finishes: one fenced multi-row UPDATE for a whole batch. An
# untried finish (tried = 0) leaves attempts and the last status as they were.


@lru_cache(maxsize=64)
def finish_many(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "WITH v(id, token, state, tried, status, error, reason, next, delivered)"
        f" AS (VALUES {values})"
        " UPDATE deliveries SET state = v.state, attempts = deliveries.attempts + v.tried,"
        " lease_token = NULL, lease_expires = NULL,"
        " last_status = CASE WHEN v.tried THEN v.status ELSE deliveries.last_status END,"
        " last_error = CASE WHEN v.tried THEN v.error ELSE deliveries.last_error END,"
        " reason = v.reason, next_attempt_at = v.next, delivered_at = v.delivered,"
        " updated_at = ?"
        " FROM v WHERE deliveries.id = v.id AND deliveries.lease_token = v.token"
        " AND deliveries.state = 'in_flight'"
        " RETURNING deliveries.id"
    )


def finish_row(lease: Lease, attempt: Attempt | None, outcome: Outcome, now: float) -> list[Any]:
    p = finish_params(lease, attempt, outcome, now)
    return [
        p["id"],
        p["token"],
        p["state"],
        0 if attempt is None else 1,
        p["status"],
        p["error"],
        p["reason"],
        p["next"],
        p["delivered"],
    ]


@lru_cache(maxsize=64)
def insert_attempts(rows: int) -> str:
    values = ", ".join(["(?, ?, ?, ?, ?, ?)"] * rows)
    return (
        "INSERT INTO attempts (delivery_id, started_at, duration_ms, status, error, answer)"
        f" VALUES {values}"
    )


# Start-up recovery under the file lock: every lease in the file belongs to a dead
# process. The lost attempt is counted, so an event that kills the process every
# time still reaches max_attempts instead of crash-looping the relay forever.
RECOVER_DELIVERIES = (
    "UPDATE deliveries SET state = 'pending', lease_token = NULL, lease_expires = NULL,"
    " attempts = attempts + 1, next_attempt_at = :now, updated_at = :now"
    " WHERE state = 'in_flight'"
)
RECOVER_SYNC_CLAIMS = "DELETE FROM events WHERE sync_state = 'in_flight'"

RELEASE_EXPIRED = (
    # The lost attempt counts, as in start-up recovery: an event that kills (or
    # hangs) whoever sends it must still reach max_attempts.
    "UPDATE deliveries SET state = 'pending', lease_token = NULL, lease_expires = NULL,"
    " attempts = attempts + 1, updated_at = :now WHERE state = 'in_flight' AND lease_expires < :now"
)

# --- sync ---------------------------------------------------------------------

_SYNC_COLUMNS = (
    "id, fingerprint, sync_state, lease_expires, trace_context,"
    " response_status, response_content_type, response_body, response_body_omitted"
)

# Takes over a conflicting row only when its lease has expired; otherwise the
# DO UPDATE's WHERE fails and RETURNING yields nothing.
CLAIM_SYNC = (
    f"INSERT INTO events ({_EVENT_COLUMNS}, sync_state, lease_token, lease_expires)"
    f" VALUES ({marks(EVENT_PARAMS)}, 'in_flight', ?, ?)"
    " ON CONFLICT (route, key) DO UPDATE SET"
    " lease_token = excluded.lease_token, lease_expires = excluded.lease_expires,"
    " duplicates = duplicates + 1, last_seen_at = max(last_seen_at, excluded.last_seen_at),"
    " first_duplicate_at = coalesce(first_duplicate_at, excluded.last_seen_at),"
    " mismatches = mismatches + (fingerprint <> excluded.fingerprint)"
    " WHERE sync_state = 'in_flight' AND lease_expires < ?"
    " RETURNING id, claim_token"
)

COUNT_SYNC_DUPLICATE = (
    # ?1 twice: the duplicate's time is also the first duplicate's, if none came before.
    "UPDATE events SET duplicates = duplicates + 1, last_seen_at = max(last_seen_at, ?1),"
    " first_duplicate_at = coalesce(first_duplicate_at, ?1),"
    " mismatches = mismatches + (fingerprint <> ?)"
    f" WHERE route = ? AND key = ? RETURNING {_SYNC_COLUMNS}"
)

PEEK_SYNC = f"SELECT {_SYNC_COLUMNS} FROM events WHERE route = ? AND key = ?"

COMPLETE_SYNC = (
    "UPDATE events SET sync_state = 'completed', response_status = ?,"
    " response_content_type = ?, response_body = ?, response_body_omitted = ?,"
    " lease_token = NULL, lease_expires = NULL"
    " WHERE id = ? AND lease_token = ? AND sync_state = 'in_flight'"
)

RELEASE_SYNC = "DELETE FROM events WHERE id = ? AND lease_token = ? AND sync_state = 'in_flight'"
