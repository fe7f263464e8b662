"""The PostgreSQL store: one database shared by several relay replicas.

The semantics are the SQLite store's, statement for statement (``sql``
mirrors ``relay.store.sqlite.sql``); what differs is that other processes write the same
rows at the same time:

* **Claims** are the same ``INSERT ... ON CONFLICT (route, key)`` upserts,
  group-committed: a batch's rows go as arrays in one statement, in (route,
  key) order, so replicas' batches lock shared keys in one order. A
  transaction PostgreSQL aborts anyway (deadlock, serialization) is run again
  from the start. Callers are answered after COMMIT. Finishes are batched too.
* **Leasing** picks rows ``FOR UPDATE SKIP LOCKED``: no delivery is leased twice.
* **Per-key ordering across replicas.** The rule checks *other* rows ("no
  earlier delivery of the key pending or in flight, none in flight at all"),
  which row locks do not protect. Replica A leases event 2 of a key whose
  event 1 is dead; meanwhile event 1 is requeued and replica B, whose
  snapshot shows event 1 pending and event 2 not yet leased, would lease
  event 1 too: two in flight. So a leasing transaction first takes a
  transaction-scoped advisory lock on (schema, route, upstream) in a
  statement of its own; under READ COMMITTED the lease statement's snapshot
  is then taken after the previous leaser's COMMIT and sees its leases. Every
  other transition only frees a key (a finish, an expiry: a leaser seeing it
  late just waits a round) or adds pending work, which a leaser that sees it
  honours and one that does not is serialised before. Leasers of one
  upstream take turns, one short statement leasing a whole batch each; other
  upstreams and all other statements are not held up. SERIALIZABLE would
  abort and retry leasers under load instead of queueing them. A UNIQUE
  partial index on in-flight (route, upstream, ordering_key) backs this up:
  a second lease of a key fails rather than being sent. Arrival order across
  replicas is event id order; events of one key accepted at one moment by
  two replicas were concurrent for the sender too.
* **Stale suppression**: the key's version is read in the lease statement and
  raised (``SELECT ... FOR UPDATE``, update or insert) in the transaction that
  marks the delivery delivered, by the key's only lease holder.
* **Sync claims**: ``ON CONFLICT DO UPDATE ... WHERE lease_expires < now``
  locks the conflicting row and evaluates the WHERE on its newest version, so
  of two replicas taking over an expired claim one wins.
* **recover()** cannot tell whether the replica holding a lease is alive (it
  may run on another host), so unlike SQLite (one process per file, under a
  lock) it returns only *expired* leases, counting the lost attempt as
  SQLite's recovery does. Live leases stay with their holders.
* **Clocks**: leases are judged by each replica's own clock (``clock``), so
  replicas' clocks must agree (NTP) to well within a lease.
* **Durability**: sessions run with ``synchronous_commit = on`` whatever the
  server's default: a commit is flushed before the sender is acked. Unlike
  SQLite, leases and sync claims are flushed too: no start-up recovery here
  rebuilds them, and a lease lost in a server crash while its holder is still
  sending would let another replica send the key's next delivery beside it.

Needs PostgreSQL 11+ (``hashtextextended``). Prepared statements are cached
per connection: a pooler in front must keep sessions (pgbouncer session mode).
Inspection, replay and retention are in ``ops``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Sequence
from typing import Any

from relay import versions
from relay.errors import StoreFull, StoreUnavailable
from relay.store import common_sql
from relay.store import rows as rowmap
from relay.store.base import (
    Acquired,
    Attempt,
    Clock,
    Ingested,
    Lease,
    NewEvent,
    Outcome,
    Pause,
    StoredResponse,
    SyncClaim,
    new_token,
)
from relay.store.batch import BatchStats, GroupCommitter, IngestBatch
from relay.store.postgres import sql as q
from relay.store.postgres.notices import PostgresNotices
from relay.store.postgres.ops import PostgresOperations
from relay.store.postgres.pool import Database, affected
from relay.store.postgres.replicas import PostgresReplicas
from relay.store.postgres.sealed import PostgresKeys
from relay.store.postgres.space import PostgresSpace
from relay.store.sealing import CLEAR_SEALER, Sealer

_Finish = tuple[Lease, Attempt | None, Outcome]


class PostgresStore(
    PostgresOperations, PostgresReplicas, PostgresKeys, PostgresSpace, PostgresNotices
):
    """``relay.store.base.Store`` on a PostgreSQL database shared by replicas.

    ``tuning``: ``max_batch`` (group commit) and the pool's ``min_size``,
    ``max_size``, ``connect_timeout``, ``command_timeout``, ``acquire_timeout``
    and ``server_settings`` (``relay.store.postgres.pool.Database``).
    """

    def __init__(
        self,
        dsn: str,
        *,
        clock: Clock = time.time,
        max_batch: int = 256,
        sealer: Sealer = CLEAR_SEALER,
        **pool: Any,
    ) -> None:
        if max_batch < 1:
            raise ValueError("max_batch must be at least 1")
        self.db = Database(dsn, **pool)
        self.clock = clock
        self.sealer = sealer
        self.max_batch = max_batch
        self.stats = BatchStats()
        self.finish_stats = BatchStats()
        self._batcher: GroupCommitter[NewEvent, Ingested] | None = None
        self._finisher: GroupCommitter[_Finish, bool] | None = None

    @classmethod
    def from_url(cls, url: str, *, clock: Clock = time.time, **tuning: Any) -> PostgresStore:
        """``postgresql://user[:password]@host[:port]/database[?param=value]``.

        Query parameters that are not libpq connection options become server
        settings of every session (e.g. ``?search_path=relay``).
        """
        return cls(url, clock=clock, **tuning)

    def __repr__(self) -> str:
        return f"PostgresStore({self.db.display!r})"

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        if self.db.is_open:
            return
        await self.db.open(self.clock())
        try:
            await self.check_keys(self.clock())
        except BaseException:
            await self.db.close()
            raise
        self._batcher = self._committer(self._commit_batch, self.stats)
        self._finisher = self._committer(self._finish_batch, self.finish_stats)
        self._batcher.start()

    def _committer(self, commit: Any, stats: BatchStats) -> GroupCommitter[Any, Any]:
        return GroupCommitter(
            commit,
            max_batch=self.max_batch,
            on_error=self.db.unavailable,
            closed_error=lambda: StoreUnavailable("the store is closed"),
            stats=stats,
        )

    async def close(self) -> None:
        with contextlib.suppress(StoreUnavailable):
            await self.deregister()
        for batcher in (self._batcher, self._finisher):
            if batcher is not None:
                await batcher.close()
        self._batcher = self._finisher = None
        await self.db.close()

    async def ping(self) -> bool:
        try:
            async with self.db.acquire() as conn:
                await conn.fetchval("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    # --- queue mode: ingest -----------------------------------------------------

    async def ingest(self, event: NewEvent) -> Ingested:
        if self._batcher is None:
            raise StoreUnavailable("the store is not open")
        if self.full is not None:
            raise StoreFull(self.full)
        return await self._batcher.submit(event)

    async def _commit_batch(self, events: Sequence[NewEvent]) -> list[Ingested]:
        now = self.clock()
        batch = IngestBatch(events, new_token())
        params = q.ingest_params(batch.upserts(), now, batch.token, self.sealer)

        async def work(conn: Any) -> tuple[dict[tuple[str, str], Any], dict[int, int]]:
            rows = await conn.fetch(q.INGEST_EVENTS, *params)
            by_key = {(str(r["route"]), str(r["key"])): r for r in rows}
            todo = batch.followups(by_key)
            if todo.deliveries:
                columns = (list(c) for c in zip(*todo.deliveries, strict=True))
                await conn.execute(q.INSERT_DELIVERIES, *columns, now)
            revived: dict[int, int] = {}
            if todo.revive:
                for r in await conn.fetch(q.REVIVE, now, todo.revive):
                    revived[int(r[0])] = revived.get(int(r[0]), 0) + 1
            if todo.mismatches:
                ids, counts = zip(*todo.mismatches, strict=True)
                await conn.execute(q.ADD_MISMATCHES, list(ids), list(counts))
            return by_key, revived

        by_key, revived = await self.db.tx(work)
        return batch.results(by_key, revived)

    async def undelivered_counts(self) -> dict[str, int]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(q.UNDELIVERED_COUNTS)
        return {str(r[0]): int(r[1]) for r in rows}

    # --- queue mode: delivery ---------------------------------------------------

    async def lease_due(
        self, route: str, upstream: str, limit: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> list[Lease]:
        if limit < 1:
            return []
        return await self._lease(q.lease_due(hold_dead), route, upstream, limit, lease_ttl)

    async def lease_delivery(
        self, route: str, upstream: str, event_id: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> Lease | None:
        sql = q.lease_due(hold_dead, one_event=True)
        leases = await self._lease(sql, route, upstream, 1, lease_ttl, event_id)
        return leases[0] if leases else None

    async def _lease(
        self, sql: str, route: str, upstream: str, limit: int, lease_ttl: float, *more: Any
    ) -> list[Lease]:
        now = self.clock()

        async def work(conn: Any) -> list[Any]:
            # Two statements: the lease's snapshot must postdate the lock (module doc).
            await conn.execute(q.LEASE_LOCK, route, upstream)
            args = (route, upstream, now, limit, self.token(), now + lease_ttl, *more)
            return list(await conn.fetch(sql, *args))

        return [
            rowmap.lease_from_rows(r, r, r["delivered_version"], self.sealer)
            for r in await self.db.tx(work)
        ]

    async def store_answer(self, event_id: int, response: StoredResponse) -> None:
        await self.db.run(q.STORE_ANSWER, *rowmap.answer_params(response, self.sealer), event_id)

    async def stored_answer(self, event_id: int) -> StoredResponse | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(q.STORED_ANSWER, event_id)
        return None if row is None else rowmap.stored_response(row, self.sealer)

    async def next_due_at(
        self, route: str, upstream: str, *, hold_dead: bool = False
    ) -> float | None:
        async with self.db.acquire() as conn:
            due = await conn.fetchval(q.next_due(hold_dead), route, upstream)
        return None if due is None else float(due)

    async def pauses(self) -> list[Pause]:
        async with self.db.acquire() as conn:
            rows = await conn.fetch(common_sql.PAUSES)
        return [rowmap.pause(r) for r in rows]

    async def make_due(self, route: str, upstream: str) -> int:
        return await self.db.run(q.MAKE_DUE, route, upstream, self.clock())

    async def count_due(self, route: str, upstream: str) -> int:
        async with self.db.acquire() as conn:
            return int(await conn.fetchval(q.COUNT_DUE, route, upstream, self.clock()))

    async def finish_attempt(self, lease: Lease, attempt: Attempt | None, outcome: Outcome) -> bool:
        # Group-committed like ingest (as in SQLite): one transaction and a
        # few statements per batch instead of a commit per delivery.
        if self._finisher is None:
            raise StoreUnavailable("the store is not open")
        return await self._finisher.submit((lease, attempt, outcome))

    async def _finish_batch(self, items: Sequence[_Finish]) -> list[bool]:
        now = self.clock()
        # One UPDATE per pass, each delivery at most once in a pass: a second
        # finish of one delivery (an old lease holder racing the new one, or a
        # repeat) is applied after the first, as if it came alone.
        passes: list[list[int]] = []
        seen: dict[int, int] = {}
        for index, (lease, _, _) in enumerate(items):
            n = seen[lease.delivery_id] = seen.get(lease.delivery_id, -1) + 1
            if n == len(passes):
                passes.append([])
            passes[n].append(index)

        async def work(conn: Any) -> list[bool]:
            ok = [False] * len(items)
            for indexes in passes:
                params = q.finish_params([items[i] for i in indexes], now)
                done = {(int(r[0]), str(r[1])) for r in await conn.fetch(q.FINISH_MANY, *params)}
                for i in indexes:
                    ok[i] = (items[i][0].delivery_id, items[i][0].token) in done
            # A fenced finish (its lease lost) logs no attempt: the new holder's counts.
            tried = [
                (
                    lease.delivery_id,
                    a.started_at,
                    a.duration_ms,
                    a.status,
                    q.opt_text(a.error),
                    self.sealer.seal(a.answer, rowmap.ANSWER),
                )
                for (lease, a, _), good in zip(items, ok, strict=True)
                if a is not None and good
            ]
            if tried:
                await conn.execute(q.INSERT_ATTEMPTS, *(list(c) for c in zip(*tried, strict=True)))
            # Same transaction as the state change: the remembered versions and
            # "delivered" are committed together or not at all.
            raised: dict[tuple[str, str, str], str] = {}
            for (lease, _, outcome), good in zip(items, ok, strict=True):
                version, ordering_key = lease.version, lease.ordering_key
                if not good or outcome.state != "delivered":
                    continue
                if version is not None and ordering_key is not None:
                    key = (lease.route, lease.upstream, ordering_key)
                    raised[key] = versions.highest(raised.get(key), version)
            for key in sorted(raised):  # one lock order for every batch
                await _raise_version(conn, key, raised[key], now)
            return ok

        return await self.db.tx(work)

    async def recover(self) -> int:
        now = self.clock()

        async def work(conn: Any) -> int:
            deliveries = affected(await conn.execute(q.RECOVER_DELIVERIES, now))
            claims = affected(await conn.execute(q.RECOVER_SYNC_CLAIMS, now))
            return deliveries + claims

        return await self.db.tx(work)

    async def release_expired_leases(self) -> int:
        return await self.db.run(q.RELEASE_EXPIRED, self.clock())

    # --- sync mode --------------------------------------------------------------

    async def claim_sync(self, event: NewEvent, lease_ttl: float) -> SyncClaim:
        if self.full is not None:
            raise StoreFull(self.full)
        # Each round is one transaction; the only way a round ends empty is a
        # holder releasing the row between its two statements, and then the
        # next round inserts afresh.
        for _ in range(16):
            claim = await self.db.tx(lambda conn: self._claim_round(conn, event, lease_ttl))
            if claim is not None:
                return claim
        raise StoreUnavailable(f"sync claim of {event.route}/{event.key} kept changing hands")

    async def _claim_round(self, conn: Any, event: NewEvent, lease_ttl: float) -> SyncClaim | None:
        now, token = self.clock(), self.token()
        params = q.sync_params(event, now, token, self.sealer)
        row = await conn.fetchrow(q.CLAIM_SYNC, *params, token, now + lease_ttl, now)
        if row is not None:
            return Acquired(int(row["id"]), token, row["claim_token"] != token)
        row = await conn.fetchrow(
            q.COUNT_SYNC_DUPLICATE, now, event.fingerprint, event.route, event.key
        )
        return None if row is None else rowmap.sync_claim_from_row(row, self.sealer)

    async def peek_sync(self, route: str, key: str) -> SyncClaim | None:
        async with self.db.acquire() as conn:
            row = await conn.fetchrow(q.PEEK_SYNC, route, key)
        return None if row is None else rowmap.sync_claim_from_row(row, self.sealer)

    async def complete_sync(self, event_id: int, token: str, response: StoredResponse) -> bool:
        status, content_type, body, omitted = rowmap.answer_params(response, self.sealer)
        args = (status, q.opt_text(content_type), body, omitted, event_id, token)
        return await self.db.run(q.COMPLETE_SYNC, *args) == 1

    async def release_sync(self, event_id: int, token: str) -> bool:
        return await self.db.run(q.RELEASE_SYNC, event_id, token) == 1


async def _raise_version(conn: Any, key: tuple[str, str, str], version: str, now: float) -> None:
    """Remember ``version`` for the key unless a higher one is remembered."""
    for _ in range(3):
        known = await conn.fetchval(q.DELIVERED_VERSION_FOR_UPDATE, *key)
        if known is not None:
            highest = versions.highest(str(known), version)
            await conn.execute(q.UPDATE_DELIVERED_VERSION, *key, highest, now)
            return
        if await conn.fetchval(q.INSERT_DELIVERED_VERSION, *key, version, now):
            return
        # Inserted by another transaction meanwhile: lock that row and compare.
    raise StoreUnavailable("the remembered version of a key kept changing")
