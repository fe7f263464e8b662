"""SQL text of the PostgreSQL store's ingest, delivery and sync mode (kept apart
so ``store.py`` reads as the transaction logic; the operations' statements
are in ``ops_sql``). Every statement mirrors its SQLite twin in
``relay.store.sqlite.sql`` (whose row mapping both stores share, so records come out
alike); the comments there say why each statement is shaped as it is, the ones
here what differs."""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

from relay.store.base import Attempt, Lease, NewEvent, Outcome
from relay.store.common_sql import free_to_lease
from relay.store.rows import BODY, headers_json
from relay.store.sealing import Sealer


def text(value: str) -> str:
    """PostgreSQL text cannot hold NUL; a decoded query string (``?a=%00``) can.

    Percent-encoding it again is what the sender sent, and forwards the same,
    where an error here would fail every event of the group-commit batch.
    """
    return value.replace("\x00", "%00") if "\x00" in value else value


def opt_text(value: str | None) -> str | None:
    return None if value is None else text(value)


# --- ingest -------------------------------------------------------------------

_EVENT_COLUMNS = (
    "route, key, key_source, fingerprint, received_at, last_seen_at, duplicates, mismatches,"
    " method, path, query, headers, body, ordering_key, version, claim_token, trace_context"
)

# One statement per batch whatever its size: the rows travel as arrays. They go
# in (route, key) order, so two replicas' batches lock conflicting keys in the
# same order and cannot deadlock each other.
INGEST_EVENTS = (
    f"INSERT INTO events AS e ({_EVENT_COLUMNS})"
    " SELECT r.route, r.key, r.key_source, r.fingerprint, r.received_at, $15, r.duplicates,"
    " r.mismatches, r.method, r.path, r.query, r.headers, r.body, r.ordering_key, r.version, $16,"
    " r.trace_context"
    " FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::float8[], $6::bigint[],"
    " $7::bigint[], $8::text[], $9::text[], $10::text[], $11::text[], $12::bytea[],"
    " $13::text[], $14::text[], $17::text[]) AS r(route, key, key_source, fingerprint,"
    " received_at, duplicates, mismatches, method, path, query, headers, body, ordering_key,"
    " version, trace_context)"
    " ORDER BY r.route, r.key"
    " ON CONFLICT (route, key) DO UPDATE SET"
    " duplicates = e.duplicates + 1 + excluded.duplicates,"
    " last_seen_at = greatest(e.last_seen_at, excluded.last_seen_at),"
    " first_duplicate_at = coalesce(e.first_duplicate_at, excluded.last_seen_at),"
    " mismatches = e.mismatches + (e.fingerprint <> excluded.fingerprint)::int"
    " RETURNING id, route, key, fingerprint, claim_token, trace_context"
)


def ingest_params(
    groups: Sequence[tuple[NewEvent, int, int]], now: float, claim_token: str, sealer: Sealer
) -> list[Any]:
    """``INGEST_EVENTS``'s arrays, one per column, from (first copy, its extra
    copies in the batch, how many of those have another fingerprint)."""
    cols: list[list[Any]] = [[] for _ in range(14)]
    traces: list[str | None] = []
    for event, duplicates, mismatches in groups:
        traces.append(event.trace)
        row = (
            event.route,
            event.key,
            event.key_source,
            event.fingerprint,
            float(event.received_at),
            duplicates,
            mismatches,
            event.method,
            text(event.path),
            text(event.query),
            headers_json(event.headers, sealer),
            sealer.seal(event.body, BODY),
            event.ordering_key,
            event.version,
        )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return [*cols, float(now), claim_token, traces]


INSERT_DELIVERIES = (
    "INSERT INTO deliveries (event_id, route, upstream, ordering_key, state, attempts,"
    " next_attempt_at, created_at, updated_at, reason)"
    " SELECT d.event_id, d.route, d.upstream, d.ordering_key,"
    " CASE WHEN d.filtered IS NULL THEN 'pending' ELSE 'filtered' END, 0,"
    " CASE WHEN d.filtered IS NULL THEN $6::float8 END, $6::float8, $6::float8, d.filtered"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[])"
    " AS d(event_id, route, upstream, ordering_key, filtered)"
)

REVIVE = (
    "UPDATE deliveries AS d SET state = 'pending', attempts = 0, next_attempt_at = $1,"
    " reason = NULL, lease_token = NULL, lease_expires = NULL, updated_at = $1, created_at = $1"
    " WHERE d.state = 'dead' AND d.event_id = ANY($2::bigint[])"
    " AND NOT EXISTS (SELECT 1 FROM deliveries AS o"
    "  WHERE o.event_id = d.event_id AND o.state <> 'dead')"
    " RETURNING d.event_id"
)

ADD_MISMATCHES = (
    "UPDATE events AS e SET mismatches = e.mismatches + f.n"
    " FROM unnest($1::bigint[], $2::bigint[]) AS f(id, n) WHERE e.id = f.id"
)

UNDELIVERED_COUNTS = (
    "SELECT route, count(DISTINCT event_id) FROM deliveries"
    " WHERE state IN ('pending', 'in_flight') GROUP BY route"
)

# --- delivery -----------------------------------------------------------------

# Serialises the leasing transactions of one (route, upstream) across replicas
# until COMMIT (see "Per-key ordering across replicas" in store.py). Scoped
# by schema: two deployments sharing a database do not wait for each other. A
# hash collision only makes two upstreams take turns.
LEASE_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "'webhook-relay.lease' || chr(10) || coalesce(current_schema(), '') || chr(10)"
    " || $1::text || chr(10) || $2::text, 0))"
)


@lru_cache(maxsize=8)
def lease_due(hold_dead: bool, one_event: bool = False) -> str:
    """$1 route, $2 upstream, $3 now, $4 limit, $5 token, $6 expires (and with
    ``one_event``, $7 the one event whose delivery to lease: hybrid mode).

    One statement leases, reads the payloads and the key's delivered version.
    SKIP LOCKED passes over rows another transaction is changing instead of
    waiting for them.
    """
    return (
        "WITH leased AS (UPDATE deliveries AS u SET state = 'in_flight',"
        " lease_token = $5 || '.' || u.id, lease_expires = $6, updated_at = $3"
        " WHERE u.id IN (SELECT d.id FROM deliveries AS d"
        "  WHERE d.route = $1 AND d.upstream = $2 AND d.state = 'pending'"
        f"  AND d.next_attempt_at <= $3 AND {free_to_lease(hold_dead)}"
        + (" AND d.event_id = $7" if one_event else "")
        + "  ORDER BY d.next_attempt_at, d.id LIMIT $4 FOR UPDATE SKIP LOCKED)"
        " RETURNING u.id, u.event_id, u.route, u.upstream, u.attempts, u.lease_token,"
        " u.lease_expires, u.next_attempt_at, u.created_at)"
        " SELECT l.*, e.key, e.method, e.path, e.query, e.headers, e.body, e.ordering_key,"
        " e.version, e.trace_context, CASE WHEN e.ordering_key IS NOT NULL AND e.version IS NOT NULL"
        "  THEN v.version END AS delivered_version"
        " FROM leased AS l JOIN events AS e ON e.id = l.event_id"
        " LEFT JOIN delivered_versions AS v ON v.route = l.route AND v.upstream = l.upstream"
        "  AND v.ordering_key = e.ordering_key"
        " ORDER BY l.next_attempt_at, l.id"
    )


STORE_ANSWER = (
    "UPDATE events SET response_status = $1, response_content_type = $2, response_body = $3,"
    " response_body_omitted = $4 WHERE id = $5"
)
STORED_ANSWER = (
    "SELECT response_status, response_content_type, response_body, response_body_omitted"
    " FROM events WHERE id = $1 AND response_status IS NOT NULL"
)

# $1 route, $2 upstream, $3 now.
MAKE_DUE = (
    "UPDATE deliveries SET next_attempt_at = $3, updated_at = $3"
    " WHERE route = $1 AND upstream = $2 AND state = 'pending' AND next_attempt_at > $3"
)
COUNT_DUE = (
    "SELECT count(*) FROM deliveries"
    " WHERE route = $1 AND upstream = $2 AND state = 'pending' AND next_attempt_at <= $3"
)


@lru_cache(maxsize=4)
def next_due(hold_dead: bool) -> str:
    return (
        "SELECT min(d.next_attempt_at) FROM deliveries AS d"
        " WHERE d.route = $1 AND d.upstream = $2 AND d.state = 'pending'"
        f" AND {free_to_lease(hold_dead)}"
    )


# Group-committed finishes: one fenced UPDATE for a whole batch, the rows as
# arrays. An untried finish (tried = 0: nothing was sent) leaves the attempt
# count and the last status as they were. $10 now.
FINISH_MANY = (
    "UPDATE deliveries AS d SET state = v.state, attempts = d.attempts + v.tried,"
    " lease_token = NULL, lease_expires = NULL,"
    " last_status = CASE WHEN v.tried = 1 THEN v.status ELSE d.last_status END,"
    " last_error = CASE WHEN v.tried = 1 THEN v.error ELSE d.last_error END,"
    " reason = v.reason, next_attempt_at = v.next, delivered_at = v.delivered,"
    " updated_at = $10"
    " FROM unnest($1::bigint[], $2::text[], $3::text[], $4::int[], $5::int[], $6::text[],"
    " $7::text[], $8::float8[], $9::float8[])"
    " AS v(id, token, state, tried, status, error, reason, next, delivered)"
    " WHERE d.id = v.id AND d.lease_token = v.token AND d.state = 'in_flight'"
    " RETURNING d.id, v.token"  # by token: a lost lease may sit in the batch with the new one
)


def finish_params(items: Sequence[tuple[Lease, Attempt | None, Outcome]], now: float) -> list[Any]:
    cols: list[list[Any]] = [[] for _ in range(9)]
    for lease, attempt, outcome in items:
        pending = outcome.state == "pending"
        row = (
            lease.delivery_id,
            lease.token,
            outcome.state,
            0 if attempt is None else 1,
            attempt.status if attempt is not None else None,
            opt_text(attempt.error) if attempt is not None else None,
            opt_text(outcome.reason) if outcome.state in ("dead", "stale") else None,
            (outcome.next_attempt_at if outcome.next_attempt_at is not None else now)
            if pending
            else None,
            now if outcome.state == "delivered" else None,
        )
        for col, value in zip(cols, row, strict=True):
            col.append(value)
    return [*cols, now]


INSERT_ATTEMPTS = (
    "INSERT INTO attempts (delivery_id, started_at, duration_ms, status, error, answer)"
    " SELECT * FROM unnest($1::bigint[], $2::float8[], $3::float8[], $4::int[], $5::text[],"
    " $6::bytea[])"
)

DELIVERED_VERSION_FOR_UPDATE = (
    "SELECT version FROM delivered_versions"
    " WHERE route = $1 AND upstream = $2 AND ordering_key = $3 FOR UPDATE"
)
INSERT_DELIVERED_VERSION = (
    "INSERT INTO delivered_versions (route, upstream, ordering_key, version, updated_at)"
    " VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING RETURNING 1"
)
UPDATE_DELIVERED_VERSION = (
    "UPDATE delivered_versions SET version = $4, updated_at = $5"
    " WHERE route = $1 AND upstream = $2 AND ordering_key = $3"
)

# Start-up recovery on a shared database: only leases that expired, since a
# replica cannot tell a dead holder from a live one on another host. Like the
# SQLite recovery, and like the periodic sweep below, the lost attempt counts.
RECOVER_DELIVERIES = (
    "UPDATE deliveries SET state = 'pending', lease_token = NULL, lease_expires = NULL,"
    " attempts = attempts + 1, next_attempt_at = $1, updated_at = $1"
    " WHERE state = 'in_flight' AND lease_expires < $1"
)
RECOVER_SYNC_CLAIMS = "DELETE FROM events WHERE sync_state = 'in_flight' AND lease_expires < $1"

RELEASE_EXPIRED = (
    # The lost attempt counts, as in start-up recovery: an event that kills (or
    # hangs) whoever sends it must still reach max_attempts.
    "UPDATE deliveries SET state = 'pending', lease_token = NULL, lease_expires = NULL,"
    " attempts = attempts + 1, updated_at = $1 WHERE state = 'in_flight' AND lease_expires < $1"
)

# --- sync ---------------------------------------------------------------------

_SYNC_COLUMNS = (
    "id, fingerprint, sync_state, lease_expires, trace_context,"
    " response_status, response_content_type, response_body, response_body_omitted"
)

# $1..$17 the event (sync_params order), $18 lease token, $19 expires, $20 now.
# ON CONFLICT DO UPDATE locks the conflicting row (waiting for a concurrent
# claimer to commit) before its WHERE is evaluated on the newest version, so
# of two replicas taking over one expired claim exactly one succeeds.
CLAIM_SYNC = (
    f"INSERT INTO events AS e ({_EVENT_COLUMNS}, sync_state, lease_token, lease_expires)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17,"
    " 'in_flight', $18, $19)"
    " ON CONFLICT (route, key) DO UPDATE SET"
    " lease_token = excluded.lease_token, lease_expires = excluded.lease_expires,"
    " duplicates = e.duplicates + 1, last_seen_at = greatest(e.last_seen_at, excluded.last_seen_at),"
    " first_duplicate_at = coalesce(e.first_duplicate_at, excluded.last_seen_at),"
    " mismatches = e.mismatches + (e.fingerprint <> excluded.fingerprint)::int"
    " WHERE e.sync_state = 'in_flight' AND e.lease_expires < $20"
    " RETURNING id, claim_token"
)


def sync_params(event: NewEvent, now: float, claim_token: str, sealer: Sealer) -> list[Any]:
    return [
        event.route,
        event.key,
        event.key_source,
        event.fingerprint,
        event.received_at,
        now,
        0,
        0,
        event.method,
        text(event.path),
        text(event.query),
        headers_json(event.headers, sealer),
        sealer.seal(event.body, BODY),
        event.ordering_key,
        event.version,
        claim_token,
        event.trace,
    ]


COUNT_SYNC_DUPLICATE = (
    "UPDATE events SET duplicates = duplicates + 1, last_seen_at = greatest(last_seen_at, $1),"
    " first_duplicate_at = coalesce(first_duplicate_at, $1),"
    " mismatches = mismatches + (fingerprint <> $2)::int"
    f" WHERE route = $3 AND key = $4 RETURNING {_SYNC_COLUMNS}"
)

PEEK_SYNC = f"SELECT {_SYNC_COLUMNS} FROM events WHERE route = $1 AND key = $2"

COMPLETE_SYNC = (
    "UPDATE events SET sync_state = 'completed', response_status = $1,"
    " response_content_type = $2, response_body = $3, response_body_omitted = $4,"
    " lease_token = NULL, lease_expires = NULL"
    " WHERE id = $5 AND lease_token = $6 AND sync_state = 'in_flight'"
)

RELEASE_SYNC = "DELETE FROM events WHERE id = $1 AND lease_token = $2 AND sync_state = 'in_flight'"
