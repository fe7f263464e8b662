"""Inspection, replay and retention on the SQLite store (admin API, housekeeping)."""

from __future__ import annotations

import sqlite3
from typing import Any

from relay.store import common_sql
from relay.store import rows as rowmap
from relay.store.base import (
    AuditEntry,
    EventFilter,
    EventInfo,
    Preview,
    RecentAttempt,
    RouteBacklog,
    UpstreamCounts,
)
from relay.store.common_sql import Driver
from relay.store.sqlite import ops_sql as q
from relay.store.sqlite.thread import SQLiteAccess


class SQLiteOperations(SQLiteAccess):
    # --- operations -------------------------------------------------------------

    async def get_event(self, event_id: int) -> EventInfo | None:
        def run(c: sqlite3.Connection) -> EventInfo | None:
            row = c.execute(q.SELECT_EVENTS + " WHERE e.id = ?", (event_id,)).fetchone()
            if row is None:
                return None
            deliveries = c.execute(q.deliveries_of(1), (event_id,)).fetchall()
            attempts = c.execute(q.ATTEMPTS_OF, (event_id,)).fetchall()
            return rowmap.event_info(row, deliveries, attempts, self.sealer)

        info: EventInfo | None = await self._read(run)
        return info

    async def list_events(
        self, flt: EventFilter, limit: int, before_id: int | None = None
    ) -> list[EventInfo]:
        def run(c: sqlite3.Connection) -> list[EventInfo]:
            where, params = q.filter_sql(flt, self._driver(c, flt))
            if before_id is not None:
                where += " AND e.id < ?"
                params.append(before_id)
            sql = f"{q.SELECT_EVENTS} WHERE {where} ORDER BY e.id DESC LIMIT ?"
            rows = c.execute(sql, [*params, limit]).fetchall()
            ids = [int(r["id"]) for r in rows]
            deliveries = c.execute(q.deliveries_of(len(ids)), ids).fetchall() if ids else []
            by_event: dict[int, list[sqlite3.Row]] = {}
            for d in deliveries:
                by_event.setdefault(int(d["event_id"]), []).append(d)
            return [
                rowmap.event_info(r, by_event.get(int(r["id"]), []), [], self.sealer) for r in rows
            ]

        events: list[EventInfo] = await self._read(run)
        return events

    async def _where(self, flt: EventFilter) -> tuple[str, list[Any]]:
        """The filter's WHERE clause, driven by the index that reads least (a hint
        taken on the reader: it changes the plan, never what matches)."""
        driver = await self._reader.call(lambda c: self._driver(c, flt))
        return q.filter_sql(flt, driver)

    @staticmethod
    def _driver(c: sqlite3.Connection, flt: EventFilter) -> Driver:
        if flt.state is None or flt.state == "delivered" or flt.ids is not None or flt.key:
            return "scan"  # delivered is most rows; ids and keys have their own index
        return common_sql.pick_driver(int(c.execute(q.COUNT_STATE, (flt.state,)).fetchone()[0]))

    async def requeue(self, flt: EventFilter) -> int:
        where, params = await self._where(flt)
        states = flt.replay_states()
        now = self.clock()
        return await self._one(q.requeue(where, len(states)), [now, now, now, *states, *params])

    async def requeue_all(self, flt: EventFilter) -> int:
        where, params = await self._where(flt)
        now = self.clock()
        return await self._one(q.requeue_all(where), [now, now, now, *params])

    async def purge(self, flt: EventFilter) -> int:
        where, params = await self._where(flt)
        return await self._one(common_sql.purge(where), params)

    # A preview selects the rows the change would touch, by the change's own WHERE
    # clause, on the reader: exact, and it never takes the write lock that ingest
    # commits wait on (an UPDATE of 20,000 dead letters rolled back held it 0.3 s).

    async def preview_requeue(self, flt: EventFilter, *, force: bool = False) -> Preview:
        where, params = await self._where(flt)
        if force:
            return await self._preview(q.preview_deliveries(q.requeue_all_rows(where)), params)
        states = flt.replay_states()
        rows = q.requeue_rows(where, len(states))
        return await self._preview(q.preview_deliveries(rows), [*states, *params])

    async def preview_purge(self, flt: EventFilter) -> Preview:
        where, params = await self._where(flt)
        return await self._preview(q.preview_purge(where), params)

    async def _preview(self, sql: str, params: list[Any]) -> Preview:
        def run(c: sqlite3.Connection) -> list[Any]:
            return c.execute(sql, params).fetchall()

        return rowmap.preview(await self._read(run))

    # --- pauses and the audit log ---------------------------------------------------

    async def pause(self, route: str, upstream: str, reason: str | None) -> bool:
        return await self._one(q.PAUSE, (route, upstream, self.clock(), reason)) == 1

    async def resume(self, route: str, upstream: str) -> int:
        if upstream:
            return await self._one(q.RESUME_UPSTREAM, (route, upstream))
        return await self._one(q.RESUME_ROUTE, (route,))

    async def add_audit(self, entry: AuditEntry) -> int:
        e = entry
        row = (e.at, e.action, e.target, e.affected, e.reason, e.credential, e.client)
        return await self._db.call(lambda c: int(c.execute(q.ADD_AUDIT, row).lastrowid or 0))

    async def audit_log(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        params = [limit] if before_id is None else [before_id, limit]
        return [
            rowmap.audit_entry(r)
            for r in await self._rows(q.audit_log(before_id is not None), params)
        ]

    async def purge_expired(self, seen_before: float, dead_before: float, limit: int) -> int:
        args = {"seen": seen_before, "dead": dead_before, "limit": limit}

        def run(c: sqlite3.Connection) -> int:
            purged = int(c.execute(q.PURGE_EXPIRED, args).rowcount)
            c.execute(q.PURGE_VERSIONS, {"seen": seen_before, "limit": limit})
            return purged

        purged: int = await self._tx(run)
        return purged

    async def drop_payloads(self, delivered_before: float, limit: int) -> int:
        args = {"before": delivered_before, "limit": limit}

        def run(c: sqlite3.Connection) -> int:
            ids = [int(r[0]) for r in c.execute(q.DROP_PAYLOADS, args).fetchall()]
            if ids:
                c.execute(q.clear_answers(len(ids)), ids)
            return len(ids)

        dropped: int = await self._tx(run)
        return dropped

    # --- observability ----------------------------------------------------------

    async def backlog(self) -> dict[str, RouteBacklog]:
        def run(c: sqlite3.Connection) -> tuple[list[Any], list[Any]]:
            return c.execute(common_sql.BACKLOG_COUNTS).fetchall(), c.execute(
                common_sql.OLDEST_OPEN
            ).fetchall()

        counts, oldest = await self._read(run)
        by_route: dict[str, dict[str, Any]] = {}
        for route, state, n in counts:
            by_route.setdefault(str(route), {})[str(state)] = int(n)
        for route, received_at in oldest:
            by_route.setdefault(str(route), {})["oldest_open_at"] = float(received_at)
        return {route: RouteBacklog(route, **fields) for route, fields in by_route.items()}

    async def upstream_counts(self) -> list[UpstreamCounts]:
        return rowmap.upstream_counts(await self._read_rows(common_sql.UPSTREAM_COUNTS))

    async def recent_attempts(self, after_id: int, limit: int) -> list[RecentAttempt]:
        rows = await self._read_rows(q.RECENT_ATTEMPTS, (after_id, limit))
        return [rowmap.recent_attempt(r) for r in rows]

    async def open_deliveries(self) -> dict[tuple[str, str], int]:
        rows = await self._rows(common_sql.OPEN_BY_UPSTREAM)
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}
