-- Encryption at rest: every key id that has sealed something in this store, so a
-- start without one of them is refused (naming it) before any row is read, and
-- rekey can say when an old key may go.
CREATE TABLE store_keys (
    key_id   TEXT PRIMARY KEY,
    added_at DOUBLE PRECISION NOT NULL
);
