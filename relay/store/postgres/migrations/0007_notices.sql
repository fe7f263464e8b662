-- Notifications (notify:): per target and condition, whether its last message said
-- it fires, since when, and when that message went. Decided here so replicas and
-- workers send one message per condition per interval between them.
CREATE TABLE notices (
    target    TEXT             NOT NULL,
    condition TEXT             NOT NULL,
    active    BOOLEAN          NOT NULL,
    since     DOUBLE PRECISION NOT NULL,
    sent_at   DOUBLE PRECISION NOT NULL,
    summary   TEXT             NOT NULL,
    PRIMARY KEY (target, condition)
);
