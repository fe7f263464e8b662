"""Hybrid mode on SQLite: one event's delivery leased in line, the answer kept for
its duplicates; both group-committed (one transaction and one hop to the store's
thread for every batch), as sync mode's claims are. And the leasing itself,
shared with ``lease_due``."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

from relay.errors import StoreUnavailable
from relay.store import rows as rowmap
from relay.store.base import Lease, StoredResponse
from relay.store.batch import GroupCommitter
from relay.store.sealing import Sealer
from relay.store.sqlite import sql as q
from relay.store.sqlite.thread import SQLiteAccess

# (route, upstream, event id, lease ttl, hold_dead)
Inline = tuple[str, str, int, float, bool]
Answer = tuple[int, StoredResponse]


def lease_rows(
    c: sqlite3.Connection, sql: str, args: dict[str, Any], sealer: Sealer
) -> list[Lease]:
    """Run a leasing statement (``q.lease_due``) and build its leases, payloads and all."""
    leased = c.execute(sql, args).fetchall()
    if not leased:
        return []
    ids = sorted({int(r["event_id"]) for r in leased})
    events = {int(e["id"]): e for e in c.execute(q.lease_payloads(len(ids)), ids)}
    # Stale suppression reads the key's delivered version here, in the
    # leasing transaction; only ordered events that carry a version need it.
    keys = sorted(
        {
            str(r["ordering_key"])
            for r in leased
            if r["ordering_key"] is not None and events[int(r["event_id"])]["version"] is not None
        }
    )
    delivered: dict[str, str] = {}
    if keys:
        rows = c.execute(q.delivered_versions(len(keys)), [args["route"], args["upstream"], *keys])
        delivered = {str(r[0]): str(r[1]) for r in rows}
    leased.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
    return [
        rowmap.lease_from_rows(
            r,
            events[int(r["event_id"])],
            delivered.get(r["ordering_key"]) if r["ordering_key"] is not None else None,
            sealer,
        )
        for r in leased
    ]


class SQLiteInline(SQLiteAccess):
    _inliner: GroupCommitter[Inline, Lease | None] | None = None
    _answerer: GroupCommitter[Answer, None] | None = None

    async def lease_delivery(
        self, route: str, upstream: str, event_id: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> Lease | None:
        if self._inliner is None:
            raise StoreUnavailable("the store is not open")
        return await self._inliner.submit((route, upstream, event_id, lease_ttl, hold_dead))

    async def _inline_batch(self, items: Sequence[Inline]) -> list[Lease | None]:
        now, token = self.clock(), self.token()

        def run(c: sqlite3.Connection) -> list[Lease | None]:
            out: list[Lease | None] = []
            for route, upstream, event_id, ttl, hold_dead in items:
                args = {"route": route, "upstream": upstream, "event_id": event_id, "limit": 1}
                args |= {"now": now, "token": token, "expires": now + ttl}
                leases = lease_rows(c, q.lease_due(hold_dead, one_event=True), args, self.sealer)
                out.append(leases[0] if leases else None)
            return out

        # As lease_due: a lease lost in a crash is rebuilt by start-up recovery.
        leases: list[Lease | None] = await self._tx(run, sync="NORMAL")
        return leases

    async def store_answer(self, event_id: int, response: StoredResponse) -> None:
        if self._answerer is None:
            raise StoreUnavailable("the store is not open")
        await self._answerer.submit((event_id, response))

    async def _answer_batch(self, items: Sequence[Answer]) -> list[None]:
        rows = [(*rowmap.answer_params(r, self.sealer), event_id) for event_id, r in items]
        # No fsync of its own: a kept answer lost in a crash only means a duplicate gets
        # the queue's ack instead of a replay; the next durable commit writes it anyway.
        await self._tx(lambda c: c.executemany(q.STORE_ANSWER, rows), sync="NORMAL")
        return [None] * len(items)

    async def stored_answer(self, event_id: int) -> StoredResponse | None:
        rows = await self._rows(q.STORED_ANSWER, (event_id,))
        return rowmap.stored_response(rows[0], self.sealer) if rows else None
