-- Relay processes sharing the store, each heartbeating; lease and claim tokens
-- start with the holder's id, so the leases of one found dead go back at once.
-- (One process per SQLite file: the table holds that one, for the same view.)
CREATE TABLE replicas (
    id           TEXT    PRIMARY KEY,
    host         TEXT    NOT NULL,
    pid          INTEGER NOT NULL,
    started_at   REAL    NOT NULL,
    heartbeat_at REAL    NOT NULL
);
