-- Replicas sharing the database, each heartbeating (the SQLite store's 0004).
-- Lease and claim tokens start with the holder's id and a '/': the leases of a
-- replica found dead are returned at once instead of when they expire.
CREATE TABLE replicas (
    id           TEXT             PRIMARY KEY,
    host         TEXT             NOT NULL,
    pid          INTEGER          NOT NULL,
    started_at   DOUBLE PRECISION NOT NULL,
    heartbeat_at DOUBLE PRECISION NOT NULL
);
