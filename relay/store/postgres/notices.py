"""Notifications' state on PostgreSQL (``relay.store.common_sql``'s statements)."""

from __future__ import annotations

from relay.store import common_sql as q
from relay.store.postgres.pool import Database
from relay.store.records import Notice


class PostgresNotices:
    # Set by PostgresStore.__init__.
    db: Database

    async def notice_fire(
        self, target: str, condition: str, now: float, interval: float, summary: str
    ) -> str | None:
        async with self.db.acquire() as conn:
            since = await conn.fetchval(
                q.NOTICE_FIRE, target, condition, now, now - interval, summary
            )
        if since is None:
            return None
        return "firing" if float(since) == now else "reminder"

    async def notice_resolve(self, target: str, condition: str, now: float, summary: str) -> bool:
        async with self.db.acquire() as conn:
            return (
                await conn.fetchval(q.NOTICE_RESOLVE, target, condition, now, summary) is not None
            )

    async def notice_unsend(self, target: str, condition: str, active: bool) -> None:
        async with self.db.acquire() as conn:
            await conn.execute(q.NOTICE_UNSEND, target, condition, active)

    async def notices_active(self, target: str) -> list[str]:
        async with self.db.acquire() as conn:
            return [str(r[0]) for r in await conn.fetch(q.NOTICES_ACTIVE, target)]

    async def notices_recent(self, limit: int) -> list[Notice]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q.NOTICES_RECENT, limit)
        return [Notice(str(r[0]), str(r[1]), bool(r[2]), r[3], r[4], str(r[5])) for r in rows]
