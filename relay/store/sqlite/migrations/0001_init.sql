-- Initial schema of the SQLite store. Times are UNIX seconds (REAL).

-- AUTOINCREMENT so a purged id is never handed out again: the admin API pages
-- by id and operators quote ids in tickets.
CREATE TABLE events (
    id                    INTEGER PRIMARY KEY AUTOINCREMENT,
    route                 TEXT    NOT NULL,
    key                   TEXT    NOT NULL,
    key_source            TEXT    NOT NULL,
    fingerprint           TEXT    NOT NULL,
    received_at           REAL    NOT NULL,
    last_seen_at          REAL    NOT NULL,
    duplicates            INTEGER NOT NULL DEFAULT 0,
    mismatches            INTEGER NOT NULL DEFAULT 0,
    method                TEXT    NOT NULL,
    path                  TEXT    NOT NULL,
    query                 TEXT    NOT NULL,
    headers               TEXT    NOT NULL,  -- JSON [[name, value], ...], order kept
    body                  BLOB,              -- NULL once payload retention dropped it
    ordering_key          TEXT,
    version               TEXT,
    -- Sync mode only; NULL for queue-mode events.
    sync_state            TEXT CHECK (sync_state IN ('in_flight', 'completed')),
    lease_token           TEXT,
    lease_expires         REAL,
    response_status       INTEGER,
    response_content_type TEXT,
    response_body         BLOB,
    response_body_omitted INTEGER NOT NULL DEFAULT 0,
    -- Written only by the INSERT branch of an upsert, never by its UPDATE
    -- branch, so RETURNING tells a claimed row from a conflicting one.
    claim_token           TEXT,
    UNIQUE (route, key)
);

CREATE INDEX events_last_seen ON events (last_seen_at);
CREATE INDEX events_route_id ON events (route, id);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    route           TEXT    NOT NULL,
    upstream        TEXT    NOT NULL,
    -- Copied from the event so the per-key ordering check needs no join.
    ordering_key    TEXT,
    state           TEXT    NOT NULL
                    CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead', 'stale')),
    attempts        INTEGER NOT NULL DEFAULT 0,
    next_attempt_at REAL,
    lease_token     TEXT,
    lease_expires   REAL,
    last_status     INTEGER,
    last_error      TEXT,
    reason          TEXT,
    created_at      REAL    NOT NULL,
    updated_at      REAL    NOT NULL,
    delivered_at    REAL
);

-- lease_due and next_due_at.
CREATE INDEX deliveries_due ON deliveries (route, upstream, state, next_attempt_at);
-- undelivered_counts (covering) and release_expired_leases.
CREATE INDEX deliveries_state_route ON deliveries (state, route, event_id);
-- The ON DELETE CASCADE, and every "does this event have a delivery in state X".
CREATE INDEX deliveries_event ON deliveries (event_id, state);
-- Per-key ordering: "is an earlier delivery of this key still open?"
CREATE INDEX deliveries_ordering ON deliveries (route, upstream, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'in_flight');

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    started_at  REAL    NOT NULL,
    duration_ms REAL    NOT NULL,
    status      INTEGER,
    error       TEXT
);

CREATE INDEX attempts_delivery ON attempts (delivery_id);
