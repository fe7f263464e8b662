"""``migrate-store``: everything a SQLite store holds, copied into an empty PostgreSQL
schema, so a relay that outgrows one machine keeps its dedupe state (every key
still inside its window is still absorbed after the move).

Offline: the SQLite store is opened as its relay would be (its lock proves no relay
runs on it) and recovered first, so no lease or sync claim of the stopped relay
travels. Then each table is copied a chunk at a time (never the whole store in
memory) in one PostgreSQL transaction, ids kept, sequences moved past them, and
the counts compared at the end; any mismatch rolls it all back. Sealed values
(``storage.encryption``) travel sealed, with the record of their key ids.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Final

from relay.errors import StoreError
from relay.store.postgres import PostgresStore
from relay.store.sealing import CARRIER
from relay.store.sqlite import SQLiteStore

CHUNK: Final = 5000
# In the order foreign keys need; replicas and schema_migrations are each store's own.
TABLES: Final = (
    "events",
    "deliveries",
    "attempts",
    "delivered_versions",
    "pauses",
    "audit_log",
    "store_keys",
)
SEQUENCES: Final = ("events", "deliveries", "attempts", "audit_log")
_BOOL: Final = {"response_body_omitted"}


class TargetNotEmpty(StoreError):
    """The PostgreSQL schema already holds relay data."""


@dataclass(frozen=True, slots=True)
class Copied:
    counts: dict[str, int]
    recovered: int  # leases of the stopped relay returned to pending first


def _pg_text(value: Any) -> Any:
    # PostgreSQL text cannot hold NUL (see relay.store.postgres.sql.text).
    return value.replace("\x00", "%00") if isinstance(value, str) and "\x00" in value else value


def _rows(
    conn: sqlite3.Connection, table: str, columns: list[str]
) -> Iterator[list[tuple[Any, ...]]]:
    convert: list[Callable[[Any], Any]] = [
        (lambda v: None if v is None else bool(v)) if c in _BOOL else _pg_text for c in columns
    ]
    cursor = conn.execute(f"SELECT {', '.join(columns)} FROM {table}")
    while chunk := cursor.fetchmany(CHUNK):
        yield [tuple(f(v) for f, v in zip(convert, row, strict=True)) for row in chunk]


async def migrate(source: SQLiteStore, target: PostgresStore) -> Copied:
    """Copy ``source`` (closed, not in use) into ``target`` (closed; its schema empty)."""
    # Sealed values travel as they are: neither side needs a key to open them.
    source.sealer = target.sealer = CARRIER
    await source.open()  # takes the file's lock: refused while a relay runs on it
    try:
        recovered = await source.recover()
    finally:
        await source.close()
    await target.open()
    try:
        return Copied(await _copy(source, target), recovered)
    finally:
        await target.close()


async def _copy(source: SQLiteStore, target: PostgresStore) -> dict[str, int]:
    conn = sqlite3.connect(f"file:{source.path}?mode=ro", uri=True)
    try:
        async with target.db.acquire() as pg, pg.transaction():
            held = {t: int(await pg.fetchval(f"SELECT count(*) FROM {t}")) for t in TABLES}
            if any(held.values()):
                found = ", ".join(f"{n} {t}" for t, n in held.items() if n)
                raise TargetNotEmpty(f"the PostgreSQL schema is not empty ({found})")
            counts = {}
            for table in TABLES:
                columns = [str(r[1]) for r in conn.execute(f"PRAGMA table_info({table})")]
                for chunk in _rows(conn, table, columns):
                    await pg.copy_records_to_table(table, records=chunk, columns=columns)
                want = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                got = int(await pg.fetchval(f"SELECT count(*) FROM {table}"))
                if got != want:
                    raise StoreError(f"{table}: copied {got} rows of {want}; nothing was kept")
                counts[table] = got
            for table in SEQUENCES:
                await pg.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
                    f" coalesce((SELECT max(id) FROM {table}), 0) + 1, false)"
                )
            return counts
    finally:
        conn.close()
