"""Versioned schema migrations: ``NNNN_name.sql`` files applied in order.

Each file runs in one transaction together with the row that records it in
``schema_migrations``, so a crash mid-migration leaves the previous version
intact. A database that records a version this code does not know was written
by a newer release and is refused (``SchemaTooNew``) rather than "repaired";
on PostgreSQL, where replicas are upgraded one at a time, only when one of the
newer migrations says it is breaking (``-- breaking: why`` in its file): the
others are additive, and an older replica keeps working on them.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from importlib import resources

from relay.errors import SchemaTooNew, StoreUnavailable

_FILE_NAME = re.compile(r"^(\d{4})_(\w+)\.sql$")
# A migration that older code cannot run on (a column renamed, dropped, retyped).
_BREAKING = re.compile(r"^--\s*breaking:\s*\S", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def breaking(self) -> bool:
        """Older releases cannot use the schema this leaves (they need a full stop)."""
        return _BREAKING.search(self.sql) is not None


def load_migrations(package: str, *parts: str) -> list[Migration]:
    """The migrations shipped as package data under ``package/parts...``, by version."""
    folder = resources.files(package).joinpath(*parts)
    found: dict[int, Migration] = {}
    for entry in folder.iterdir():
        match = _FILE_NAME.match(entry.name)
        if match is None:
            continue
        version = int(match.group(1))
        if version in found:
            raise RuntimeError(f"two migrations with version {version}: {entry.name}")
        found[version] = Migration(version, match.group(2), entry.read_text(encoding="utf-8"))
    versions = sorted(found)
    if versions != list(range(1, len(versions) + 1)):
        # A gap usually means a file was lost in packaging; applying past it
        # would build a schema no release ever had.
        raise RuntimeError(f"migration versions are not 1..n: {versions}")
    return [found[v] for v in versions]


def split_statements(script: str) -> list[str]:
    """Cut a script into statements, keeping trigger bodies whole.

    ``executescript`` would commit on its own; running statement by statement
    keeps the whole migration inside our transaction.
    """
    statements: list[str] = []
    buffer = ""
    for piece in script.split(";"):
        buffer += piece + ";"
        if sqlite3.complete_statement(buffer):
            text = buffer.strip()
            if _has_code(text):
                statements.append(text)
            buffer = ""
    if _has_code(buffer.rstrip(";")):
        raise ValueError(f"incomplete SQL statement at end of migration: {buffer.strip()!r}")
    return statements


def _has_code(text: str) -> bool:
    lines = (line.split("--", 1)[0].strip() for line in text.splitlines())
    return any(line and line != ";" for line in lines)


def migrate_sqlite(conn: sqlite3.Connection, migrations: list[Migration], now: float) -> int:
    """Bring the database to the newest version; return that version.

    ``conn`` must be in autocommit mode (``isolation_level=None``).
    """
    latest = migrations[-1].version if migrations else 0
    try:
        # IMMEDIATE: two processes starting at once must not both apply 0002.
        conn.execute("BEGIN IMMEDIATE")
        try:
            conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version INTEGER PRIMARY KEY, name TEXT NOT NULL, applied_at REAL NOT NULL)"
            )
            row = conn.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()
            current = int(row[0])
            if current > latest:
                raise SchemaTooNew(
                    f"database schema version {current} is newer than this webhook-relay "
                    f"knows ({latest}); refusing to downgrade it"
                )
            for migration in migrations:
                if migration.version <= current:
                    continue
                for statement in split_statements(migration.sql):
                    conn.execute(statement)
                conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at) VALUES (?, ?, ?)",
                    (migration.version, migration.name, now),
                )
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise StoreUnavailable(f"cannot migrate the SQLite schema: {exc}") from exc
    return latest
