"""Encryption at rest on PostgreSQL: the keys the database has seen, checked before
the store opens, and rekey's batches (``relay.store.sealing`` seals; this reads and
writes). Replicas share the record: each adds its current key when it opens."""

from __future__ import annotations

from typing import Any, Final

from relay.store import rows as rowmap
from relay.store.postgres.pool import Database
from relay.store.sealing import KeyMissing, Sealer

KEY_IDS: Final = "SELECT key_id FROM store_keys ORDER BY key_id"
ADD_KEY: Final = (
    "INSERT INTO store_keys (key_id, added_at) VALUES ($1, $2) ON CONFLICT (key_id) DO NOTHING"
)
FORGET_KEYS: Final = (
    "DELETE FROM store_keys WHERE key_id IS DISTINCT FROM $1::text RETURNING key_id"
)

# Per table: the batch read (the id first, rows locked), its UPDATE, the sealed columns.
_RESEAL: Final = {
    "events": (
        "SELECT id, headers, body, response_body FROM events WHERE id > $1 ORDER BY id"
        " LIMIT $2 FOR UPDATE",
        "UPDATE events SET headers = $1, body = $2, response_body = $3 WHERE id = $4",
        (rowmap.HEADERS, rowmap.BODY, rowmap.RESPONSE),
    ),
    "attempts": (
        "SELECT id, answer FROM attempts WHERE id > $1 ORDER BY id LIMIT $2 FOR UPDATE",
        "UPDATE attempts SET answer = $1 WHERE id = $2",
        (rowmap.ANSWER,),
    ),
}


_HIGH_WATER: Final = {t: f"SELECT coalesce(max(id), 0) FROM {t}" for t in _RESEAL}


class PostgresKeys:
    # Set by PostgresStore.__init__.
    db: Database
    sealer: Sealer

    async def check_keys(self, now: float) -> None:
        """At open: refuse a database sealed with a key the sealer lacks (naming it);
        record the current key before anything is sealed with it."""
        async with self.db.acquire() as conn:
            used = [str(r[0]) for r in await conn.fetch(KEY_IDS)]
            if missing := self.sealer.missing(used):
                raise KeyMissing(missing[0])
            if (current := self.sealer.current_id) is not None:
                await conn.execute(ADD_KEY, current, now)

    async def key_ids(self) -> list[str]:
        async with self.db.acquire() as conn:
            return [str(r[0]) for r in await conn.fetch(KEY_IDS)]

    async def reseal(self, table: str, after_id: int, limit: int) -> tuple[int | None, int]:
        select, update, columns = _RESEAL[table]

        async def work(conn: Any) -> tuple[int | None, int]:
            rows = await conn.fetch(select, after_id, limit)
            changed = self.sealer.resealed(rows, columns)
            if changed:
                await conn.executemany(update, changed)
            return (int(rows[-1][0]) if rows else None), len(changed)

        done: tuple[int | None, int] = await self.db.tx(work)
        return done

    async def high_water(self, table: str) -> int:
        async with self.db.acquire() as conn:
            found = await conn.fetchval(_HIGH_WATER[table])
        return int(found)

    async def forget_keys(self) -> list[str]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(FORGET_KEYS, self.sealer.current_id)
        return [str(r[0]) for r in rows]
