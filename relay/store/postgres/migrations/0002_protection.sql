-- Protecting the backend: paused routes, and the operators' audit log (the
-- SQLite store's 0003, in PostgreSQL types).

CREATE TABLE pauses (
    route    TEXT             NOT NULL,
    upstream TEXT             NOT NULL,  -- '' for the whole route
    since    DOUBLE PRECISION NOT NULL,
    reason   TEXT,
    PRIMARY KEY (route, upstream)
);

CREATE TABLE audit_log (
    id         BIGSERIAL        PRIMARY KEY,
    at         DOUBLE PRECISION NOT NULL,
    action     TEXT             NOT NULL,
    target     TEXT             NOT NULL,
    affected   BIGINT           NOT NULL,
    reason     TEXT,
    credential TEXT             NOT NULL,
    client     TEXT
);
