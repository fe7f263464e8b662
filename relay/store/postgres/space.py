"""Space for the PostgreSQL store: measured on the relay's own tables (their heap,
indexes and TOAST, ``pg_total_relation_size``, in the schema the relay uses), and
capped (``storage.max_bytes`` / ``max_rows``: the oldest finished data goes).
The server's autovacuum reuses the space a purge frees; the files shrink only by a
``VACUUM FULL``, which is the database administrator's to run."""

from __future__ import annotations

from typing import Any, Final

from relay.store.common_sql import NO_OPEN_WORK
from relay.store.postgres.pool import Database

FINISHED: Final = f"(e.sync_state = 'completed' OR (e.sync_state IS NULL AND {NO_OPEN_WORK}))"
USAGE: Final = (
    "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class AS c"
    " JOIN pg_namespace AS n ON n.oid = c.relnamespace"
    " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
)
CAP_BODIES: Final = (
    f"SELECT e.id, length(e.body) FROM events AS e WHERE e.id > $1 AND e.body IS NOT NULL"
    f" AND {FINISHED} ORDER BY e.id LIMIT $2 FOR UPDATE SKIP LOCKED"
)
# What an event's row, its deliveries and index entries take besides body and headers.
ROW_BYTES: Final = 256
CAP_EVENTS: Final = (
    f"DELETE FROM events WHERE id IN (SELECT e.id FROM events AS e WHERE {FINISHED}"
    " AND ($1::float8 IS NULL OR e.last_seen_at < $1) ORDER BY e.id LIMIT $2"
    " FOR UPDATE SKIP LOCKED)"
    f" RETURNING coalesce(length(body), 0) + length(headers) + length(key) + {ROW_BYTES}"
)


class PostgresSpace:
    # Set by PostgresStore.__init__.
    db: Database
    auto_vacuum: str = "server"
    # Why new events are refused (a storage cap with only in-window keys left), if they are.
    full: str | None = None

    async def usage(self) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval(USAGE))

    async def give_back(self, _pages: int) -> int:
        return 0  # autovacuum's to do

    async def count_events(self) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval("SELECT count(*) FROM events"))

    async def cap_bodies(self, after_id: int, limit: int) -> tuple[int | None, int, int]:
        async def work(conn: Any) -> tuple[int | None, int, int]:
            rows = await conn.fetch(CAP_BODIES, after_id, limit)
            if not rows:
                return None, 0, 0
            ids = [int(r[0]) for r in rows]
            await conn.execute("UPDATE events SET body = NULL WHERE id = ANY($1::bigint[])", ids)
            gone = await conn.fetch(
                "DELETE FROM attempts WHERE delivery_id IN"
                " (SELECT id FROM deliveries WHERE event_id = ANY($1::bigint[]))"
                " RETURNING coalesce(length(answer), 0) + coalesce(length(error), 0) + 64",
                ids,
            )
            freed = sum(int(r[1]) for r in rows) + sum(int(r[0]) for r in gone)
            return ids[-1], len(ids), freed

        done: tuple[int | None, int, int] = await self.db.tx(work)
        return done

    async def cap_events(self, seen_before: float | None, limit: int) -> tuple[int, int]:
        async def work(conn: Any) -> tuple[int, int]:
            sizes = [int(r[0]) for r in await conn.fetch(CAP_EVENTS, seen_before, limit)]
            return len(sizes), sum(sizes)

        done: tuple[int, int] = await self.db.tx(work)
        return done
