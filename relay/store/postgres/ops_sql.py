"""SQL text of the PostgreSQL store's operations (``ops``): inspection,
replay, retention and the backlog figures. Each mirrors its SQLite twin in
``relay.store.sqlite.ops_sql``; the comments here say what differs."""

from __future__ import annotations

from typing import Any

from relay.store import common_sql
from relay.store.base import EventFilter
from relay.store.common_sql import NO_OPEN_WORK

# --- operations ---------------------------------------------------------------

SELECT_EVENTS = (
    "SELECT e.id, e.route, e.key, e.key_source, e.fingerprint, e.received_at, e.last_seen_at,"
    " e.duplicates, e.mismatches, e.method, e.path, e.query, e.headers, e.body, e.sync_state,"
    " e.first_duplicate_at FROM events AS e"
)

DELIVERIES_OF = (
    "SELECT id, event_id, upstream, state, attempts, next_attempt_at, last_status,"
    " last_error, reason, updated_at FROM deliveries WHERE event_id = ANY($1::bigint[])"
    " ORDER BY id"
)

ATTEMPTS_OF = (
    "SELECT a.id, a.delivery_id, a.started_at, a.duration_ms, a.status, a.error, a.answer"
    " FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id"
    " WHERE d.event_id = $1 ORDER BY a.id"
)


def filter_sql(flt: EventFilter, params: list[Any]) -> str:
    """A WHERE clause over ``events AS e``; its values are appended to ``params``."""

    def arg(value: Any) -> str:
        params.append(value)
        return f"${len(params)}"

    clauses = ["TRUE"]
    for column, op, value in (
        ("e.route", "=", flt.route),
        ("e.key", "=", flt.key),
        ("e.received_at", ">=", flt.since),
        ("e.received_at", "<", flt.until),
    ):
        if value is not None:
            clauses.append(f"{column} {op} {arg(value)}")
    if flt.key is not None and flt.route is None:
        clauses.append(f"e.route IN ({common_sql.ROUTES_WITH_EVENTS})")
    if flt.ids is not None:
        clauses.append(f"e.id = ANY({arg(list(flt.ids))}::bigint[])" if flt.ids else "FALSE")
    if flt.state is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM deliveries AS d"
            f" WHERE d.event_id = e.id AND d.state = {arg(flt.state)})"
        )
    return " AND ".join(clauses)


def requeue(where: str, states: str, now: str) -> str:
    return (
        f"UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = {now},"
        f" reason = NULL, lease_token = NULL, lease_expires = NULL, updated_at = {now},"
        f" created_at = {now} WHERE state = ANY({states}::text[])"
        f" AND event_id IN (SELECT e.id FROM events AS e WHERE {where})"
    )


def requeue_all(where: str, now: str) -> str:
    return (
        f"UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = {now},"
        " reason = NULL, lease_token = NULL, lease_expires = NULL, delivered_at = NULL,"
        f" updated_at = {now}, created_at = {now} WHERE state <> 'in_flight'"
        f" AND event_id IN (SELECT e.id FROM events AS e WHERE {where} AND e.body IS NOT NULL)"
    )


PURGE_VERSIONS = (
    "DELETE FROM delivered_versions WHERE (route, upstream, ordering_key) IN"
    " (SELECT route, upstream, ordering_key FROM delivered_versions"
    " WHERE updated_at < $1 LIMIT $2 FOR UPDATE SKIP LOCKED)"
)

# $1 seen_before, $2 dead_before, $3 limit. SKIP LOCKED: replicas running
# retention at the same time split the work instead of queueing on each other's
# rows (or on a row an ingest is reviving right now).
PURGE_EXPIRED = (
    "DELETE FROM events WHERE id IN (SELECT e.id FROM events AS e"
    " WHERE e.last_seen_at < greatest($1::float8, $2::float8) AND ("
    f"  (e.sync_state IS NULL AND {NO_OPEN_WORK} AND ("
    "   (e.last_seen_at < $1 AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
    "     WHERE d.event_id = e.id AND d.state NOT IN ('delivered', 'stale', 'filtered')))"
    "   OR (e.last_seen_at < $2 AND EXISTS (SELECT 1 FROM deliveries AS d"
    "     WHERE d.event_id = e.id AND d.state = 'dead'))))"
    "  OR (e.sync_state = 'completed' AND e.last_seen_at < $1)"
    "  OR (e.sync_state = 'in_flight' AND e.lease_expires < $1 AND e.last_seen_at < $1))"
    " LIMIT $3 FOR UPDATE SKIP LOCKED)"
)

# $1 delivered_before, $2 limit.
# The kept answers of attempts go with the payloads, in the same statement.
DROP_PAYLOADS = (
    "WITH dropped AS (UPDATE events SET body = NULL WHERE id IN (SELECT e.id FROM events AS e"
    " WHERE e.received_at < $1 AND e.body IS NOT NULL AND e.sync_state IS NULL"
    " AND EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id)"
    " AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id"
    "  AND (d.state <> 'delivered' OR d.delivered_at >= $1))"
    " LIMIT $2 FOR UPDATE SKIP LOCKED) RETURNING id),"
    " cleared AS (UPDATE attempts SET answer = NULL WHERE answer IS NOT NULL AND delivery_id IN"
    "  (SELECT d.id FROM deliveries AS d WHERE d.event_id IN (SELECT id FROM dropped)))"
    " SELECT count(*) FROM dropped"
)

# --- observability ------------------------------------------------------------

# Portable SQL, the same statements as SQLite's.


# --- pauses and the audit log ----------------------------------------------------

PAUSE = (
    "INSERT INTO pauses (route, upstream, since, reason) VALUES ($1, $2, $3, $4)"
    " ON CONFLICT (route, upstream) DO NOTHING"
)
RESUME_UPSTREAM = "DELETE FROM pauses WHERE route = $1 AND upstream = $2"
RESUME_ROUTE = "DELETE FROM pauses WHERE route = $1"
ADD_AUDIT = (
    "INSERT INTO audit_log (at, action, target, affected, reason, credential, client)"
    " VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id"
)


def audit_log(paged: bool) -> str:
    if paged:  # $1 before id, $2 limit
        return f"SELECT {common_sql.AUDIT_COLUMNS} FROM audit_log WHERE id < $1 ORDER BY id DESC LIMIT $2"
    return f"SELECT {common_sql.AUDIT_COLUMNS} FROM audit_log ORDER BY id DESC LIMIT $1"


# --- the console ------------------------------------------------------------------

# Newest first by the attempts' primary key: the tail and the overview's last errors.
RECENT_ATTEMPTS = (
    "SELECT a.id, d.event_id, d.route, d.upstream, a.started_at, a.duration_ms, a.status,"
    " a.error FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id"
    " WHERE a.id > $1 ORDER BY a.id DESC LIMIT $2"
)
