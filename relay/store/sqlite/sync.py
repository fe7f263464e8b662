"""Sync mode on the SQLite store: claim a key, store its answer, or release it.

Claims and answers are group-committed like ingest (``relay.store.batch``);
``SQLiteStore`` starts and stops their committers. Claims commit without an
fsync (start-up recovery frees every claim a crash leaves behind), answers
with one per batch.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from relay.errors import StoreFull, StoreUnavailable
from relay.store import rows as rowmap
from relay.store.base import Acquired, NewEvent, StoredResponse, SyncClaim
from relay.store.batch import GroupCommitter
from relay.store.sqlite import sql as q
from relay.store.sqlite.thread import SQLiteAccess

Claim = tuple[NewEvent, float]
Complete = tuple[int, str, StoredResponse]


class SQLiteSyncMode(SQLiteAccess):
    # Set by SQLiteStore.open(), cleared by close().
    _claimer: GroupCommitter[Claim, SyncClaim | None] | None
    _completer: GroupCommitter[Complete, bool] | None

    # --- sync mode --------------------------------------------------------------

    async def claim_sync(self, event: NewEvent, lease_ttl: float) -> SyncClaim:
        if self._claimer is None:
            raise StoreUnavailable("the store is not open")
        if self.full is not None:
            raise StoreFull(self.full)
        # A round yields None only if the row vanished between its two statements
        # (its holder released it); the next round inserts afresh.
        for _ in range(16):
            claim = await self._claimer.submit((event, lease_ttl))
            if claim is not None:
                return claim
        raise StoreUnavailable(f"sync claim of {event.route}/{event.key} kept changing hands")

    async def _claim_batch(self, items: Sequence[Claim]) -> list[SyncClaim | None]:
        def one(c: sqlite3.Connection, event: NewEvent, lease_ttl: float) -> SyncClaim | None:
            now, token = self.clock(), self.token()
            params = q.event_params(event, now, 0, 0, token, self.sealer)
            row = c.execute(q.CLAIM_SYNC, [*params, token, now + lease_ttl, now]).fetchone()
            if row is not None:
                return Acquired(int(row["id"]), token, row["claim_token"] != token)
            dup = (now, event.fingerprint, event.route, event.key)
            row = c.execute(q.COUNT_SYNC_DUPLICATE, dup).fetchone()
            return rowmap.sync_claim_from_row(row, self.sealer) if row is not None else None

        def run(c: sqlite3.Connection) -> list[SyncClaim | None]:
            # In order, in one transaction: a second claim of a key in the same
            # batch sees the first one's row and is Busy.
            return [one(c, event, ttl) for event, ttl in items]

        # Group-committed, without an fsync: start-up recovery frees every claim
        # a crash leaves behind.
        return await self._tx(run, sync="NORMAL")

    async def peek_sync(self, route: str, key: str) -> SyncClaim | None:
        rows = await self._rows(q.PEEK_SYNC, (route, key))
        return rowmap.sync_claim_from_row(rows[0], self.sealer) if rows else None

    async def complete_sync(self, event_id: int, token: str, response: StoredResponse) -> bool:
        # Group-committed: the answer is stored durably, one fsync per batch of
        # concurrent completions instead of one per request.
        if self._completer is None:
            raise StoreUnavailable("the store is not open")
        return await self._completer.submit((event_id, token, response))

    async def _complete_batch(self, items: Sequence[Complete]) -> list[bool]:
        rows = [
            (*rowmap.answer_params(r, self.sealer), event_id, token) for event_id, token, r in items
        ]

        def run(c: sqlite3.Connection) -> list[bool]:
            return [c.execute(q.COMPLETE_SYNC, row).rowcount == 1 for row in rows]

        return await self._tx(run)

    async def release_sync(self, event_id: int, token: str) -> bool:
        return await self._one(q.RELEASE_SYNC, (event_id, token)) == 1
