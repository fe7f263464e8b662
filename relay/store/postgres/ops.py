"""Inspection, replay and retention on the PostgreSQL store (admin API, housekeeping)."""

from __future__ import annotations

from typing import Any

from relay.store import common_sql
from relay.store import rows as rowmap
from relay.store.base import (
    AuditEntry,
    Clock,
    EventFilter,
    EventInfo,
    Preview,
    RecentAttempt,
    RouteBacklog,
    UpstreamCounts,
)
from relay.store.postgres import ops_sql as q
from relay.store.postgres.pool import Database, affected
from relay.store.sealing import Sealer


class PostgresOperations:
    # Set by PostgresStore.__init__.
    db: Database
    clock: Clock
    sealer: Sealer
    # --- operations -------------------------------------------------------------

    async def get_event(self, event_id: int) -> EventInfo | None:
        async def work(conn: Any) -> EventInfo | None:
            row = await conn.fetchrow(q.SELECT_EVENTS + " WHERE e.id = $1", event_id)
            if row is None:
                return None
            deliveries = await conn.fetch(q.DELIVERIES_OF, [event_id])
            attempts = await conn.fetch(q.ATTEMPTS_OF, event_id)
            return rowmap.event_info(row, deliveries, attempts, self.sealer)

        return await self.db.tx(work, snapshot=True)

    async def list_events(
        self, flt: EventFilter, limit: int, before_id: int | None = None
    ) -> list[EventInfo]:
        params: list[Any] = []
        where = q.filter_sql(flt, params)
        if before_id is not None:
            params.append(before_id)
            where += f" AND e.id < ${len(params)}"
        params.append(limit)
        sql = f"{q.SELECT_EVENTS} WHERE {where} ORDER BY e.id DESC LIMIT ${len(params)}"

        async def work(conn: Any) -> tuple[list[Any], list[Any]]:
            rows = list(await conn.fetch(sql, *params))
            ids = [int(r["id"]) for r in rows]
            return rows, list(await conn.fetch(q.DELIVERIES_OF, ids)) if ids else []

        rows, deliveries = await self.db.tx(work, snapshot=True)
        by_event: dict[int, list[Any]] = {}
        for d in deliveries:
            by_event.setdefault(int(d["event_id"]), []).append(d)
        return [rowmap.event_info(r, by_event.get(int(r["id"]), []), [], self.sealer) for r in rows]

    async def requeue(self, flt: EventFilter) -> int:
        params: list[Any] = []
        where = q.filter_sql(flt, params)
        states = flt.replay_states()
        params += [states, self.clock()]
        n = len(params)
        return await self.db.run(q.requeue(where, f"${n - 1}", f"${n}"), *params)

    async def requeue_all(self, flt: EventFilter) -> int:
        params: list[Any] = []
        where = q.filter_sql(flt, params)
        params.append(self.clock())
        return await self.db.run(q.requeue_all(where, f"${len(params)}"), *params)

    async def purge(self, flt: EventFilter) -> int:
        params: list[Any] = []
        where = q.filter_sql(flt, params)
        return await self.db.run(common_sql.purge(where), *params)

    async def preview_requeue(self, flt: EventFilter, *, force: bool = False) -> Preview:
        params: list[Any] = []
        where = q.filter_sql(flt, params)
        if force:
            params.append(self.clock())
            return await self._preview(q.requeue_all(where, f"${len(params)}"), params)
        states = flt.replay_states()
        params += [states, self.clock()]
        n = len(params)
        return await self._preview(q.requeue(where, f"${n - 1}", f"${n}"), params)

    async def preview_purge(self, flt: EventFilter) -> Preview:
        params: list[Any] = []
        where = q.filter_sql(flt, params)
        return await self._preview(common_sql.purge(where), params, event_id="id")

    async def _preview(self, sql: str, params: list[Any], event_id: str = "event_id") -> Preview:
        async with self.db.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                rows = await conn.fetch(f"{sql} RETURNING route, {event_id}", *params)
            finally:
                await tx.rollback()
        return rowmap.preview(rows)

    # --- pauses and the audit log ---------------------------------------------------

    async def pause(self, route: str, upstream: str, reason: str | None) -> bool:
        return await self.db.run(q.PAUSE, route, upstream, self.clock(), reason) == 1

    async def resume(self, route: str, upstream: str) -> int:
        if upstream:
            return await self.db.run(q.RESUME_UPSTREAM, route, upstream)
        return await self.db.run(q.RESUME_ROUTE, route)

    async def add_audit(self, entry: AuditEntry) -> int:
        e = entry
        async with self.db.acquire() as conn:
            new_id = await conn.fetchval(
                q.ADD_AUDIT, e.at, e.action, e.target, e.affected, e.reason, e.credential, e.client
            )
        return int(new_id)

    async def audit_log(self, limit: int, before_id: int | None = None) -> list[AuditEntry]:
        args = [limit] if before_id is None else [before_id, limit]
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q.audit_log(before_id is not None), *args)
        return [rowmap.audit_entry(r) for r in rows]

    async def purge_expired(self, seen_before: float, dead_before: float, limit: int) -> int:
        async with self.db.acquire() as conn:
            purged = affected(await conn.execute(q.PURGE_EXPIRED, seen_before, dead_before, limit))
            await conn.execute(q.PURGE_VERSIONS, seen_before, limit)
        return purged

    async def drop_payloads(self, delivered_before: float, limit: int) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval(q.DROP_PAYLOADS, delivered_before, limit))

    # --- observability ----------------------------------------------------------

    async def backlog(self) -> dict[str, RouteBacklog]:
        async def work(conn: Any) -> tuple[list[Any], list[Any]]:
            return list(await conn.fetch(common_sql.BACKLOG_COUNTS)), list(
                await conn.fetch(common_sql.OLDEST_OPEN)
            )

        counts, oldest = await self.db.tx(work, snapshot=True)
        by_route: dict[str, dict[str, Any]] = {}
        for route, state, n in counts:
            by_route.setdefault(str(route), {})[str(state)] = int(n)
        for route, received_at in oldest:
            by_route.setdefault(str(route), {})["oldest_open_at"] = float(received_at)
        return {route: RouteBacklog(route, **fields) for route, fields in by_route.items()}

    async def upstream_counts(self) -> list[UpstreamCounts]:
        async with self.db.acquire() as conn:
            return rowmap.upstream_counts(await conn.fetch(common_sql.UPSTREAM_COUNTS))

    async def recent_attempts(self, after_id: int, limit: int) -> list[RecentAttempt]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q.RECENT_ATTEMPTS, after_id, limit)
        return [rowmap.recent_attempt(r) for r in rows]

    async def open_deliveries(self) -> dict[tuple[str, str], int]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(common_sql.OPEN_BY_UPSTREAM)
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}
