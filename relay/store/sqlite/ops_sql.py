"""SQL text of the SQLite store's operations (``ops``): inspection,
replay, retention and the backlog figures. Ingest, delivery and sync-mode
statements are in ``sql``."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from relay.store import common_sql
from relay.store.base import EventFilter
from relay.store.common_sql import DRIVE_BELOW, NO_OPEN_WORK, ROUTES_WITH_EVENTS, Driver
from relay.store.sqlite.sql import marks

# --- operations ---------------------------------------------------------------

SELECT_EVENTS = (
    "SELECT e.id, e.route, e.key, e.key_source, e.fingerprint, e.received_at, e.last_seen_at,"
    " e.duplicates, e.mismatches, e.method, e.path, e.query, e.headers, e.body, e.sync_state,"
    " e.first_duplicate_at FROM events AS e"
)


@lru_cache(maxsize=64)
def deliveries_of(events: int) -> str:
    return (
        "SELECT id, event_id, upstream, state, attempts, next_attempt_at, last_status,"
        f" last_error, reason, updated_at FROM deliveries WHERE event_id IN ({marks(events)})"
        " ORDER BY id"
    )


ATTEMPTS_OF = (
    "SELECT a.id, a.delivery_id, a.started_at, a.duration_ms, a.status, a.error, a.answer"
    " FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id"
    " WHERE d.event_id = ? ORDER BY a.id"
)


def filter_sql(flt: EventFilter, driver: Driver = "scan") -> tuple[str, list[Any]]:
    """A WHERE clause over ``events AS e`` and its parameters; ``driver`` says which
    index answers it (``common_sql.pick_driver``), never what it matches."""
    clauses = ["1"]
    params: list[Any] = []
    by_state = flt.state is not None and driver == "state"
    for column, op, value in (
        ("e.route", "=", None if by_state else flt.route),  # then the state's index has it
        ("e.key", "=", flt.key),
        ("e.received_at", ">=", flt.since),
        ("e.received_at", "<", flt.until),
    ):
        if value is not None:
            clauses.append(f"{column} {op} ?")
            params.append(value)
    if flt.key is not None and flt.route is None:
        clauses.append(f"e.route IN ({ROUTES_WITH_EVENTS})")
    # Ids grow with arrival: a time range is also an id range, taken from the
    # received_at index, so a newest-first read starts and stops at its ends. (The
    # "+ 0": min(id) alone would be read off the primary key, from the first event.)
    if flt.since is not None:
        clauses.append("e.id >= (SELECT min(t.id + 0) FROM events AS t WHERE t.received_at >= ?)")
        params.append(flt.since)
    if flt.until is not None:
        clauses.append("e.id <= (SELECT max(t.id + 0) FROM events AS t WHERE t.received_at < ?)")
        params.append(flt.until)
    if flt.ids is not None:
        clauses.append(f"e.id IN ({marks(len(flt.ids))})" if flt.ids else "0")
        params += flt.ids
    if flt.state is not None and by_state:
        route = " AND d.route = ?" if flt.route is not None else ""
        clauses.append(f"e.id IN (SELECT d.event_id FROM deliveries AS d WHERE d.state = ?{route})")
        params += [flt.state] if flt.route is None else [flt.state, flt.route]
    elif flt.state is not None:
        clauses.append(
            "EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id AND d.state = ?)"
        )
        params.append(flt.state)
    return " AND ".join(clauses), params


COUNT_STATE = f"SELECT count(*) FROM (SELECT 1 FROM deliveries WHERE state = ? LIMIT {DRIVE_BELOW})"


def requeue_rows(where: str, states: int) -> str:
    """The deliveries ``requeue`` changes; its preview selects the same rows."""
    return (
        f"state IN ({marks(states)}) AND event_id IN (SELECT e.id FROM events AS e WHERE {where})"
    )


def requeue(where: str, states: int) -> str:
    return (
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
        " reason = NULL, lease_token = NULL, lease_expires = NULL, updated_at = ?, created_at = ?"
        f" WHERE {requeue_rows(where, states)}"
    )


def requeue_all_rows(where: str) -> str:
    """The deliveries ``requeue_all`` changes. In-flight deliveries are left to their
    lease holder; a dropped payload cannot be forwarded again."""
    return (
        "state <> 'in_flight'"
        f" AND event_id IN (SELECT e.id FROM events AS e WHERE {where} AND e.body IS NOT NULL)"
    )


def requeue_all(where: str) -> str:
    return (
        "UPDATE deliveries SET state = 'pending', attempts = 0, next_attempt_at = ?,"
        " reason = NULL, lease_token = NULL, lease_expires = NULL, delivered_at = NULL,"
        f" updated_at = ?, created_at = ? WHERE {requeue_all_rows(where)}"
    )


def preview_deliveries(rows: str) -> str:
    return f"SELECT route, event_id FROM deliveries WHERE {rows}"


def preview_purge(where: str) -> str:
    return f"SELECT route, id FROM events WHERE id IN ({common_sql.purge_rows(where)})"


# --- pauses and the audit log ----------------------------------------------------

PAUSE = (
    "INSERT INTO pauses (route, upstream, since, reason) VALUES (?, ?, ?, ?)"
    " ON CONFLICT (route, upstream) DO NOTHING"
)
RESUME_UPSTREAM = "DELETE FROM pauses WHERE route = ? AND upstream = ?"
RESUME_ROUTE = "DELETE FROM pauses WHERE route = ?"
ADD_AUDIT = (
    "INSERT INTO audit_log (at, action, target, affected, reason, credential, client)"
    " VALUES (?, ?, ?, ?, ?, ?, ?)"
)


def audit_log(paged: bool) -> str:
    where = " WHERE id < ?" if paged else ""
    return f"SELECT {common_sql.AUDIT_COLUMNS} FROM audit_log{where} ORDER BY id DESC LIMIT ?"


# The remembered versions live as long as the keys they order (dedupe_window).
PURGE_VERSIONS = (
    "DELETE FROM delivered_versions WHERE (route, upstream, ordering_key) IN"
    " (SELECT route, upstream, ordering_key FROM delivered_versions"
    " WHERE updated_at < :seen LIMIT :limit)"
)

# The leading last_seen_at bound lets the index drive the scan. An abandoned
# sync claim (lease long expired, sender gone) is garbage too, not open work.
PURGE_EXPIRED = (
    "DELETE FROM events WHERE id IN (SELECT e.id FROM events AS e"
    " WHERE e.last_seen_at < max(:seen, :dead) AND ("
    f"  (e.sync_state IS NULL AND {NO_OPEN_WORK} AND ("
    "   (e.last_seen_at < :seen AND NOT EXISTS (SELECT 1 FROM deliveries AS d"
    "     WHERE d.event_id = e.id AND d.state NOT IN ('delivered', 'stale', 'filtered')))"
    "   OR (e.last_seen_at < :dead AND EXISTS (SELECT 1 FROM deliveries AS d"
    "     WHERE d.event_id = e.id AND d.state = 'dead'))))"
    "  OR (e.sync_state = 'completed' AND e.last_seen_at < :seen)"
    "  OR (e.sync_state = 'in_flight' AND e.lease_expires < :seen AND e.last_seen_at < :seen))"
    " LIMIT :limit)"
)

DROP_PAYLOADS = (
    "UPDATE events SET body = NULL WHERE id IN (SELECT e.id FROM events AS e"
    " WHERE e.received_at < :before AND e.body IS NOT NULL AND e.sync_state IS NULL"
    " AND EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id)"
    " AND NOT EXISTS (SELECT 1 FROM deliveries AS d WHERE d.event_id = e.id"
    "  AND (d.state <> 'delivered' OR d.delivered_at >= :before))"
    " LIMIT :limit) RETURNING id"
)


@lru_cache(maxsize=8)
def clear_answers(events: int) -> str:
    """The kept answers go with the payloads (payload retention)."""
    return (
        "UPDATE attempts SET answer = NULL WHERE answer IS NOT NULL AND delivery_id IN"
        f" (SELECT id FROM deliveries WHERE event_id IN ({marks(events)}))"
    )


# --- the console ------------------------------------------------------------------

# Newest first by the attempts' primary key: the tail and the overview's last errors.
RECENT_ATTEMPTS = (
    "SELECT a.id, d.event_id, d.route, d.upstream, a.started_at, a.duration_ms, a.status,"
    " a.error FROM attempts AS a JOIN deliveries AS d ON d.id = a.delivery_id"
    " WHERE a.id > ? ORDER BY a.id DESC LIMIT ?"
)
