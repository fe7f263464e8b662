-- A delivery a route's filter dropped: state 'filtered' (its reason names the
-- rule). SQLite cannot change a CHECK in place, so deliveries is rebuilt, and
-- attempts with it: renaming a parent re-points its children's foreign keys, so
-- both move aside, are created anew and copied, and the old ones dropped once
-- nothing refers to them (no cascade fires: foreign keys stay on throughout).
ALTER TABLE attempts RENAME TO attempts_v5;
ALTER TABLE deliveries RENAME TO deliveries_v5;

CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id        INTEGER NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    route           TEXT    NOT NULL,
    upstream        TEXT    NOT NULL,
    -- Copied from the event so the per-key ordering check needs no join.
    ordering_key    TEXT,
    state           TEXT    NOT NULL
                    CHECK (state IN ('pending', 'in_flight', 'delivered', 'dead', 'stale',
                                     'filtered')),
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

CREATE TABLE attempts (
    id          INTEGER PRIMARY KEY,
    delivery_id INTEGER NOT NULL REFERENCES deliveries (id) ON DELETE CASCADE,
    started_at  REAL    NOT NULL,
    duration_ms REAL    NOT NULL,
    status      INTEGER,
    error       TEXT,
    answer      BLOB
);

INSERT INTO deliveries (id, event_id, route, upstream, ordering_key, state, attempts,
                        next_attempt_at, lease_token, lease_expires, last_status, last_error,
                        reason, created_at, updated_at, delivered_at)
    SELECT id, event_id, route, upstream, ordering_key, state, attempts, next_attempt_at,
           lease_token, lease_expires, last_status, last_error, reason, created_at,
           updated_at, delivered_at
      FROM deliveries_v5;
INSERT INTO attempts (id, delivery_id, started_at, duration_ms, status, error, answer)
    SELECT id, delivery_id, started_at, duration_ms, status, error, answer FROM attempts_v5;

DROP TABLE attempts_v5;
DROP TABLE deliveries_v5;

CREATE INDEX deliveries_due ON deliveries (route, upstream, state, next_attempt_at);
CREATE INDEX deliveries_state_route ON deliveries (state, route, event_id);
CREATE INDEX deliveries_event ON deliveries (event_id, state);
CREATE INDEX deliveries_ordering ON deliveries (route, upstream, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND state IN ('pending', 'in_flight');
CREATE INDEX deliveries_ordering_dead ON deliveries (route, upstream, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND state = 'dead';
CREATE INDEX deliveries_ordering_leased ON deliveries (route, upstream, ordering_key)
    WHERE ordering_key IS NOT NULL AND state = 'in_flight';
CREATE INDEX attempts_delivery ON attempts (delivery_id);
