"""SQL both dialects run as written: the statements that use no placeholder
and no dialect function. Each store's own ``sql`` and ``ops_sql`` import them
from here; everything else is written once per dialect, side by side."""

from __future__ import annotations

from typing import Literal

# --- per-key ordering ------------------------------------------------------------

# Per-key ordering: a delivery waits while an earlier event with the same
# ordering key still has an open delivery to the same upstream, and while any
# delivery of that key to that upstream is in flight (a revived or requeued
# older event must not overlap a newer one being sent): at most one delivery
# of a key is leased at a time. With on_dead: hold, an earlier dead delivery of
# the key blocks it too, until revived, requeued or purged. Each NOT EXISTS is
# answered from a partial index (deliveries_ordering, _leased, _dead).
_ORDER_OPEN = (
    "NOT EXISTS (SELECT 1 FROM deliveries AS o"
    " WHERE o.route = d.route AND o.upstream = d.upstream AND o.ordering_key = d.ordering_key"
    " AND o.state IN ('pending', 'in_flight') AND o.event_id < d.event_id)"
    " AND NOT EXISTS (SELECT 1 FROM deliveries AS o"
    " WHERE o.route = d.route AND o.upstream = d.upstream AND o.ordering_key = d.ordering_key"
    " AND o.state = 'in_flight')"
)
_ORDER_DEAD = (
    "NOT EXISTS (SELECT 1 FROM deliveries AS o"
    " WHERE o.route = d.route AND o.upstream = d.upstream AND o.ordering_key = d.ordering_key"
    " AND o.state = 'dead' AND o.event_id < d.event_id)"
)


# A paused route (upstream '') or upstream: its deliveries are not leased, by any
# process or replica (the check is in the same statement that leases).
NOT_PAUSED = (
    "NOT EXISTS (SELECT 1 FROM pauses AS p"
    " WHERE p.route = d.route AND p.upstream IN ('', d.upstream))"
)


def free_to_lease(hold_dead: bool) -> str:
    """Per-key ordering lets the delivery go, and it is not paused."""
    if hold_dead:
        return f"(d.ordering_key IS NULL OR ({_ORDER_OPEN} AND {_ORDER_DEAD})) AND {NOT_PAUSED}"
    return f"(d.ordering_key IS NULL OR {_ORDER_OPEN}) AND {NOT_PAUSED}"


PAUSES = "SELECT route, upstream, since, reason FROM pauses ORDER BY route, upstream"
AUDIT_COLUMNS = "id, at, action, target, affected, reason, credential, client"


# --- filters ----------------------------------------------------------------------

# Every route with an event, by a loose index scan of (route, id): one index seek
# per route. A key filter without a route goes through the (route, key) index
# with it, instead of reading every event.
ROUTES_WITH_EVENTS = (
    "WITH RECURSIVE r(route) AS (SELECT min(route) FROM events"
    " UNION ALL SELECT (SELECT min(route) FROM events WHERE route > r.route)"
    " FROM r WHERE r.route IS NOT NULL) SELECT route FROM r WHERE route IS NOT NULL"
)

# A newest-first list reads events backwards by id and checks each: quick when
# matches are many among the newest, slow when they are few and old (the dead
# letters of last month's outage under a million delivered events). A state
# matching fewer than DRIVE_BELOW deliveries (counted up to that, so counting
# stays cheap) is answered from the deliveries' state index instead.
DRIVE_BELOW = 100_000
Driver = Literal["scan", "state"]


def pick_driver(state_rows: int | None) -> Driver:
    """``state_rows``: deliveries in the filter's state (None: no state filtered)."""
    return "state" if state_rows is not None and state_rows < DRIVE_BELOW else "scan"


# --- purge -------------------------------------------------------------------------

NO_OPEN_WORK = (
    "NOT EXISTS (SELECT 1 FROM deliveries AS d"
    " WHERE d.event_id = e.id AND d.state IN ('pending', 'in_flight'))"
)


def purge_rows(where: str) -> str:
    """The events ``purge`` deletes; its preview selects the same rows."""
    return (
        "SELECT e.id FROM events AS e"
        f" WHERE {where} AND coalesce(e.sync_state, '') <> 'in_flight' AND {NO_OPEN_WORK}"
    )


def purge(where: str) -> str:
    return f"DELETE FROM events WHERE id IN ({purge_rows(where)})"


# --- observability ------------------------------------------------------------

# Both scan only the (state, route, event_id) index over open and dead rows,
# never the delivered history.
BACKLOG_COUNTS = (
    "SELECT route, state, count(DISTINCT event_id) FROM deliveries"
    " WHERE state IN ('pending', 'in_flight', 'dead') GROUP BY state, route"
)

# Ids grow with arrival, so the smallest open event id is the oldest open event.
OLDEST_OPEN = (
    "SELECT m.route, e.received_at FROM (SELECT route, min(event_id) AS first FROM deliveries"
    " WHERE state IN ('pending', 'in_flight') GROUP BY route) AS m"
    " JOIN events AS e ON e.id = m.first"
)

# The deliveries that need a look, per upstream: over the (state, route, event_id)
# index's open, dead and stale rows, never the delivered history.
UPSTREAM_COUNTS = (
    "SELECT route, upstream, state, count(*) FROM deliveries"
    " WHERE state IN ('pending', 'in_flight', 'dead', 'stale') GROUP BY route, upstream, state"
)

OPEN_BY_UPSTREAM = (
    "SELECT route, upstream, count(*) FROM deliveries"
    " WHERE state IN ('pending', 'in_flight') GROUP BY route, upstream"
)


# --- replicas ------------------------------------------------------------------------

REPLICAS_WITH_LEASES = (
    "SELECT r.id, r.host, r.pid, r.started_at, r.heartbeat_at,"
    " (SELECT count(*) FROM deliveries AS d WHERE d.state = 'in_flight'"
    "  AND substr(d.lease_token, 1, length(r.id) + 1) = r.id || '/') AS leases"
    " FROM replicas AS r ORDER BY r.started_at, r.id"
)


# --- notices (notify:) ---------------------------------------------------------------
# Written with PostgreSQL's $n; SQLite reads the same as ?n (``sqlite_marks``). Each
# claim is one statement: of two replicas deciding at once, one gets the row back
# and sends the message, the other gets nothing.

# $1 target, $2 condition, $3 now, $4 interval start, $5 summary. A firing condition's
# message is due when it starts, and again (a reminder) once an interval has passed
# since the last message. Returns since (= now: it has just started).
NOTICE_FIRE = (
    "INSERT INTO notices (target, condition, active, since, sent_at, summary)"
    " VALUES ($1, $2, TRUE, $3, $3, $5)"
    " ON CONFLICT (target, condition) DO UPDATE SET"
    " since = CASE WHEN notices.active THEN notices.since ELSE excluded.since END,"
    " active = TRUE, sent_at = excluded.sent_at, summary = excluded.summary"
    " WHERE notices.sent_at <= $4"
    " RETURNING since"
)
# $1 target, $2 condition, $3 now, $4 summary: it cleared; said once.
NOTICE_RESOLVE = (
    "UPDATE notices SET active = FALSE, sent_at = $3, summary = $4"
    " WHERE target = $1 AND condition = $2 AND active RETURNING since"
)
# A message that could not be sent: put back as it was ($3), due again at once.
NOTICE_UNSEND = "UPDATE notices SET active = $3, sent_at = 0 WHERE target = $1 AND condition = $2"
NOTICES_ACTIVE = "SELECT condition FROM notices WHERE target = $1 AND active"
NOTICES_RECENT = (
    "SELECT target, condition, active, since, sent_at, summary FROM notices"
    " ORDER BY sent_at DESC LIMIT $1"
)


def sqlite_marks(sql: str) -> str:
    return sql.replace("$", "?")
