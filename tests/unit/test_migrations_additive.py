"""The rule rolling upgrades rest on: a PostgreSQL migration is additive (older
replicas keep working on what it leaves) unless its file says ``-- breaking: why``;
the releases before the rule are grandfathered."""

from __future__ import annotations

import re

from relay.store.migrate import Migration, load_migrations

# The last migration shipped before older replicas could run on a newer schema.
GRANDFATHERED = 5
# What an older release's queries cannot survive.
_NOT_ADDITIVE = re.compile(
    r"\b(DROP\s+(TABLE|COLUMN|INDEX|CONSTRAINT|VIEW|TYPE)|RENAME\b|ALTER\s+COLUMN\s+\w+\s+"
    r"(TYPE|SET\s+NOT\s+NULL|SET\s+DATA\s+TYPE)|ADD\s+COLUMN\s+(IF\s+NOT\s+EXISTS\s+)?\w+\s+[^,;]*"
    r"NOT\s+NULL(?![^,;]*DEFAULT))",
    re.IGNORECASE,
)


def _code(sql: str) -> str:
    return "\n".join(line.split("--", 1)[0] for line in sql.splitlines())


def test_a_breaking_migration_says_so() -> None:
    assert Migration(
        9, "x", "-- breaking: renames events.key\nALTER TABLE t RENAME a TO b;"
    ).breaking
    assert not Migration(9, "x", "-- a comment about breaking: nothing\nSELECT 1;").breaking
    assert not Migration(9, "x", "ALTER TABLE t ADD COLUMN c INTEGER;").breaking


def test_the_check_finds_what_older_releases_cannot_survive() -> None:
    for bad in (
        "ALTER TABLE events DROP COLUMN trace_context",
        "ALTER TABLE events RENAME COLUMN key TO idem_key",
        "ALTER TABLE events ALTER COLUMN key TYPE BYTEA",
        "ALTER TABLE events ADD COLUMN owner TEXT NOT NULL",
        "DROP TABLE pauses",
    ):
        assert _NOT_ADDITIVE.search(bad), bad
    for good in (
        "ALTER TABLE events ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        "ALTER TABLE events ADD COLUMN note TEXT",
        "CREATE TABLE notes (id BIGINT PRIMARY KEY, body TEXT NOT NULL)",
        "CREATE INDEX IF NOT EXISTS events_by_owner ON events (owner)",
    ):
        assert not _NOT_ADDITIVE.search(good), good


def test_every_postgres_migration_after_the_rule_is_additive_or_says_it_is_not() -> None:
    for m in load_migrations("relay.store.postgres", "migrations"):
        if m.version <= GRANDFATHERED or m.breaking:
            continue
        found = _NOT_ADDITIVE.search(_code(m.sql))
        assert found is None, f"{m.version}_{m.name}: {found.group(0)!r} is not additive"
