-- Protecting the backend: paused routes, and the operators' audit log.

-- A paused route (upstream '') or one upstream of it: lease_due leaves its
-- deliveries pending, in every process and replica sharing the store; ingest
-- goes on. Resuming deletes the row.
CREATE TABLE pauses (
    route    TEXT NOT NULL,
    upstream TEXT NOT NULL,
    since    REAL NOT NULL,
    reason   TEXT,
    PRIMARY KEY (route, upstream)
) WITHOUT ROWID;

-- Every change an operator made through the admin API: replays, purges,
-- pauses. Kept for good (a few rows a day); nothing but an INSERT writes it.
CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY,
    at         REAL    NOT NULL,
    action     TEXT    NOT NULL,
    target     TEXT    NOT NULL,  -- JSON: the event id, the filter, or route and upstream
    affected   INTEGER NOT NULL,  -- deliveries requeued, events purged, 1 for a pause
    reason     TEXT,
    credential TEXT    NOT NULL,  -- admin_token, or loopback (no token configured)
    client     TEXT               -- the caller's User-Agent, as sent
);
