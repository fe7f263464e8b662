"""Encryption at rest on SQLite: the keys the file has seen, checked before the store
opens, and rekey's batches (``relay.store.sealing`` seals; this reads and writes)."""

from __future__ import annotations

import sqlite3
from typing import Final

from relay.store import rows as rowmap
from relay.store.sealing import KeyMissing, Sealer
from relay.store.sqlite.thread import SQLiteAccess

KEY_IDS: Final = "SELECT key_id FROM store_keys ORDER BY key_id"
ADD_KEY: Final = "INSERT OR IGNORE INTO store_keys (key_id, added_at) VALUES (?, ?)"
FORGET_KEYS: Final = "DELETE FROM store_keys WHERE key_id IS NOT ? RETURNING key_id"

# Per table: the batch read (the id first), its UPDATE, the sealed columns in order.
_RESEAL: Final = {
    "events": (
        "SELECT id, headers, body, response_body FROM events WHERE id > ? ORDER BY id LIMIT ?",
        "UPDATE events SET headers = ?, body = ?, response_body = ? WHERE id = ?",
        (rowmap.HEADERS, rowmap.BODY, rowmap.RESPONSE),
    ),
    "attempts": (
        "SELECT id, answer FROM attempts WHERE id > ? ORDER BY id LIMIT ?",
        "UPDATE attempts SET answer = ? WHERE id = ?",
        (rowmap.ANSWER,),
    ),
}


_HIGH_WATER: Final = {t: f"SELECT coalesce(max(id), 0) FROM {t}" for t in _RESEAL}


def check_keys(c: sqlite3.Connection, sealer: Sealer, now: float) -> None:
    """At open: refuse a store sealed with a key the sealer lacks (naming it); record
    the current key before anything is sealed with it."""
    used = [str(r[0]) for r in c.execute(KEY_IDS)]
    if missing := sealer.missing(used):
        raise KeyMissing(missing[0])
    if (current := sealer.current_id) is not None:
        c.execute(ADD_KEY, (current, now))


class SQLiteKeys(SQLiteAccess):
    async def key_ids(self) -> list[str]:
        return [str(r[0]) for r in await self._rows(KEY_IDS)]

    async def reseal(self, table: str, after_id: int, limit: int) -> tuple[int | None, int]:
        select, update, columns = _RESEAL[table]

        # One transaction on the writer: nothing changes a row between its read and
        # its rewrite.
        def run(c: sqlite3.Connection) -> tuple[int | None, int]:
            rows = c.execute(select, (after_id, limit)).fetchall()
            changed = self.sealer.resealed(rows, columns)
            if changed:
                c.executemany(update, changed)
            return (int(rows[-1][0]) if rows else None), len(changed)

        done: tuple[int | None, int] = await self._tx(run)
        return done

    async def high_water(self, table: str) -> int:
        rows = await self._rows(_HIGH_WATER[table])
        return int(rows[0][0])

    async def forget_keys(self) -> list[str]:
        current = self.sealer.current_id
        return [str(r[0]) for r in await self._rows(FORGET_KEYS, (current,))]
