-- Initial schema of the PostgreSQL store: the SQLite schema (0001 + 0002) in
-- PostgreSQL types. Times are UNIX seconds (DOUBLE PRECISION) from the
-- replicas' own clocks, as everywhere in the store's interface.

-- A sequence never hands out a purged id again: the admin API pages by id and
-- operators quote ids in tickets.
CREATE TABLE events (
    id                    BIGSERIAL PRIMARY KEY,
    route                 TEXT             NOT NULL,
    key                   TEXT             NOT NULL,
    key_source            TEXT             NOT NULL,
    fingerprint           TEXT             NOT NULL,
    received_at           DOUBLE PRECISION NOT NULL,
    last_seen_at          DOUBLE PRECISION NOT NULL,
    duplicates            BIGINT           NOT NULL DEFAULT 0,
    mismatches            BIGINT           NOT NULL DEFAULT 0,
    method                TEXT             NOT NULL,
    path                  TEXT             NOT NULL,
    query                 TEXT             NOT NULL,
    headers               TEXT             NOT NULL,  -- JSON [[name, value], ...], order kept
    body                  BYTEA,                      -- NULL once payload retention dropped it
    ordering_key          TEXT,
    version               TEXT,
    -- Sync mode only; NULL for queue-mode events.
    sync_state            TEXT CHECK (sync_state IN ('in_flight', 'completed')),
    lease_token           TEXT,
    lease_expires         DOUBLE PRECISION,
    response_status       INTEGER,
    response_content_type TEXT,
    response_body         BYTEA,
    response_body_omitted BOOLEAN          NOT NULL DEFAULT FALSE,
    -- Written only by the INSERT branch of an upsert, never by its UPDATE
    -- branch, so RETURNING tells a claimed row from a conflicting one.
    claim_token           TEXT,
    CONSTRAINT events_route_key UNIQUE (route, key)
);

CREATE INDEX events_last_seen ON events (last_seen_at);
CREATE INDEX events_route_id ON events (route, id);
CREATE INDEX events_received ON events (received_at);

CREATE TABLE deliveries (
    id              BIGSERIAL PRIMARY KEY,
    event_id        BIGINT           NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    route           TEXT             NOT NULL,
    upstream        TEXT             NOT NULL,
    -- Copied from the event so the per-key ordering check needs no join.
    ordering_key    TEXT,
    state           TEXT             NOT NULL
                    CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead', 'stale')),
    attempts        INTEGER          NOT NULL DEFAULT 0,
    next_attempt_at DOUBLE PRECISION,
    lease_token     TEXT,
    lease_expires   DOUBLE PRECISION,
    last_status     INTEGER,
    last_error      TEXT,
    reason          TEXT,
    created_at      DOUBLE PRECISION NOT NULL,
    updated_at      DOUBLE PRECISION NOT NULL,
    delivered_at    DOUBLE PRECISION
);

-- lease_due and next_due_at: only the due candidates, however long the history.
CREATE INDEX deliveries_due ON deliveries (route, upstream, next_attempt_at, id)
    WHERE state = 'pending';
-- undelivered_counts, backlog, open_deliveries: open and dead rows only.
CREATE INDEX deliveries_state_route ON deliveries (state, route, event_id)
    WHERE state IN ('pending', 'in_flight', 'dead');
-- release_expired_leases and recover.
CREATE INDEX deliveries_leased ON deliveries (lease_expires) WHERE state = 'in_flight';
-- The ON DELETE CASCADE, and every "does this event have a delivery in state X".
CREATE INDEX deliveries_event ON deliveries (event_id, state);
-- Per-key ordering: "is an earlier delivery of this key still open?"
CREATE INDEX deliveries_ordering ON deliveries (route, upstream, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'in_flight');
-- on_dead: hold — "is an earlier delivery of this key dead?"
CREATE INDEX deliveries_ordering_dead ON deliveries (route, upstream, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND state = 'dead';
-- "Is a delivery of this key in flight?" UNIQUE: at most one delivery of a key
-- and upstream is leased at any time, whichever replica leased it. lease_due
-- keeps this by itself (see relay/store/postgres/store.py); the index makes a
-- second lease impossible rather than merely unlikely.
CREATE UNIQUE INDEX deliveries_ordering_leased ON deliveries (route, upstream, ordering_key)
    WHERE ordering_key IS NOT NULL AND state = 'in_flight';

CREATE TABLE attempts (
    id          BIGSERIAL PRIMARY KEY,
    delivery_id BIGINT           NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    started_at  DOUBLE PRECISION NOT NULL,
    duration_ms DOUBLE PRECISION NOT NULL,
    status      INTEGER,
    error       TEXT
);

CREATE INDEX attempts_delivery ON attempts (delivery_id);

-- The highest version delivered per (route, upstream, ordering key). Raised in
-- the transaction that marks a delivery delivered (finish_attempt); read in
-- the transaction that leases the key's next delivery (lease_due). Rows go
-- with the dedupe window (purge_expired), like the keys themselves.
CREATE TABLE delivered_versions (
    route        TEXT             NOT NULL,
    upstream     TEXT             NOT NULL,
    ordering_key TEXT             NOT NULL,
    version      TEXT             NOT NULL,
    updated_at   DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (route, upstream, ordering_key)
);

CREATE INDEX delivered_versions_updated ON delivered_versions (updated_at);
