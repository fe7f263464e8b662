-- Per-key ordering (on_dead: hold) and stale suppression.

-- The highest version delivered per (route, upstream, ordering key). Raised in
-- the transaction that marks a delivery delivered (finish_attempt); read in
-- the transaction that leases the key's next delivery (lease_due). Rows go
-- with the dedupe window (purge_expired), like the keys themselves.
CREATE TABLE delivered_versions (
    route        TEXT NOT NULL,
    upstream     TEXT NOT NULL,
    ordering_key TEXT NOT NULL,
    version      TEXT NOT NULL,
    updated_at   REAL NOT NULL,
    PRIMARY KEY (route, upstream, ordering_key)
) WITHOUT ROWID;

CREATE INDEX delivered_versions_updated ON delivered_versions (updated_at);

-- on_dead: hold — "is an earlier delivery of this key dead?"
CREATE INDEX deliveries_ordering_dead ON deliveries (route, upstream, ordering_key, event_id)
    WHERE ordering_key IS NOT NULL AND state = 'dead';

-- "Is a delivery of this key in flight?" (at most one of a key is leased):
-- only leased rows, so it stays small however long a key's backlog.
CREATE INDEX deliveries_ordering_leased ON deliveries (route, upstream, ordering_key)
    WHERE ordering_key IS NOT NULL AND state = 'in_flight';
