"""Notifications' state on SQLite (``relay.store.common_sql``'s statements)."""

from __future__ import annotations

from relay.store import common_sql as q
from relay.store.records import Notice
from relay.store.sqlite.thread import SQLiteAccess


class SQLiteNotices(SQLiteAccess):
    async def notice_fire(
        self, target: str, condition: str, now: float, interval: float, summary: str
    ) -> str | None:
        args = (target, condition, now, now - interval, summary)
        rows = await self._rows(q.sqlite_marks(q.NOTICE_FIRE), args)
        if not rows:
            return None
        return "firing" if float(rows[0][0]) == now else "reminder"

    async def notice_resolve(self, target: str, condition: str, now: float, summary: str) -> bool:
        args = (target, condition, now, summary)
        return bool(await self._rows(q.sqlite_marks(q.NOTICE_RESOLVE), args))

    async def notice_unsend(self, target: str, condition: str, active: bool) -> None:
        await self._one(q.sqlite_marks(q.NOTICE_UNSEND), (target, condition, active))

    async def notices_active(self, target: str) -> list[str]:
        return [str(r[0]) for r in await self._rows(q.sqlite_marks(q.NOTICES_ACTIVE), (target,))]

    async def notices_recent(self, limit: int) -> list[Notice]:
        rows = await self._read_rows(q.sqlite_marks(q.NOTICES_RECENT), (limit,))
        return [Notice(str(r[0]), str(r[1]), bool(r[2]), r[3], r[4], str(r[5])) for r in rows]
