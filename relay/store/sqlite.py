"""The SQLite store: the embedded default for a single relay process.

One aiosqlite connection (one worker thread) in WAL mode with
``synchronous=FULL``, so a commit is on disk before the sender is acked.
Queue-mode ingests are group-committed (``relay.store.batch``); everything
else runs directly on the connection. An ``asyncio.Lock`` keeps one
coroutine's transaction from interleaving with another's: aiosqlite orders
calls, but not whole transactions.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import secrets
import sqlite3
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import aiosqlite

from relay import versions
from relay.errors import StoreUnavailable
from relay.store import sqlite_sql as q
from relay.store.base import (
    Acquired,
    Attempt,
    Clock,
    EventFilter,
    EventInfo,
    Ingested,
    Lease,
    NewEvent,
    Outcome,
    RouteBacklog,
    StoredResponse,
    SyncClaim,
)
from relay.store.batch import BatchStats, GroupCommitter
from relay.store.migrate import load_migrations, migrate_sqlite

# SQLITE_MAX_VARIABLE_NUMBER's default since SQLite 3.32 (we need 3.35+ anyway
# for RETURNING).
_MAX_VARIABLES = 32766
_MAX_BATCH = _MAX_VARIABLES // q.EVENT_PARAMS


_Finish = tuple[Lease, Attempt | None, Outcome]


def _token() -> str:
    return secrets.token_hex(16)


class SQLiteStore:
    """``relay.store.base.Store`` on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        max_batch: int = 256,
        busy_timeout: float = 5.0,
    ) -> None:
        if not 1 <= max_batch <= _MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {_MAX_BATCH}")
        self.path = Path(path)
        self.clock = clock
        self.max_batch = max_batch
        self.busy_timeout = busy_timeout
        self.stats = BatchStats()
        self._conn: aiosqlite.Connection | None = None
        self._lock_fd: int | None = None
        self._lock = asyncio.Lock()
        self._batcher: GroupCommitter[NewEvent, Ingested] | None = None
        self._finisher: GroupCommitter[_Finish, bool] | None = None
        self.finish_stats = BatchStats()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock = time.time,
        max_batch: int = 256,
        busy_timeout: float = 5.0,
    ) -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        rest = url[len(prefix) :] if url.startswith(prefix) else ""
        if not rest.strip("/") or "?" in rest or rest.endswith("/"):
            raise ValueError(f"not a SQLite file url: {url!r} (sqlite:///relative/path.db)")
        path = Path(rest)
        path.parent.mkdir(parents=True, exist_ok=True)
        return cls(path, clock=clock, max_batch=max_batch, busy_timeout=busy_timeout)

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        if self._conn is not None:
            return
        self._lock_file()
        try:
            conn = await aiosqlite.connect(
                self.path, isolation_level=None, timeout=self.busy_timeout
            )
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
        try:
            conn.row_factory = sqlite3.Row
            await conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
            mode = list(await conn.execute_fetchall("PRAGMA journal_mode = WAL"))
            if str(mode[0][0]).lower() != "wal":
                raise StoreUnavailable(f"{self.path}: cannot switch to WAL (got {mode[0][0]})")
            await conn.execute("PRAGMA synchronous = FULL")
            await conn.execute("PRAGMA foreign_keys = ON")
            migrations = load_migrations("relay.store", "sql", "sqlite")
            await migrate_sqlite(conn, migrations, self.clock())
        except BaseException as exc:
            with suppress(sqlite3.Error):
                await conn.close()
            self._unlock_file()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            raise
        self._conn = conn
        self._finisher = GroupCommitter(
            self._finish_batch,
            max_batch=self.max_batch,
            on_error=_unavailable,
            closed_error=lambda: StoreUnavailable("the store is closed"),
            stats=self.finish_stats,
        )
        self._batcher = GroupCommitter(
            self._commit_batch,
            max_batch=self.max_batch,
            on_error=_unavailable,
            closed_error=lambda: StoreUnavailable("the store is closed"),
            stats=self.stats,
        )
        self._batcher.start()

    async def close(self) -> None:
        for batcher in (self._batcher, self._finisher):
            if batcher is not None:
                await batcher.close()
        self._batcher = self._finisher = None
        async with self._lock:
            conn, self._conn = self._conn, None
            if conn is not None:
                with suppress(sqlite3.Error):
                    await conn.close()
        self._unlock_file()

    def _lock_file(self) -> None:
        """One relay process per database: SQLite would allow a second one, but its
        start-up recovery would then take leases a live process still holds."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreUnavailable(
                f"{self.path} is in use by another webhook-relay process"
            ) from None
        self._lock_fd = fd

    def _unlock_file(self) -> None:
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            os.close(fd)  # closing the descriptor releases the flock

    async def ping(self) -> bool:
        try:
            async with self._locked() as conn:
                await conn.execute_fetchall("SELECT 1")
        except StoreUnavailable:
            return False
        return True

    # --- transactions ---------------------------------------------------------

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StoreUnavailable("the store is not open")
        return self._conn

    @asynccontextmanager
    async def _locked(self) -> AsyncIterator[aiosqlite.Connection]:
        """Exclusive use of the connection for single autocommit statements."""
        async with self._lock:
            conn = self._connection()
            try:
                if conn.in_transaction:
                    # A caller cancelled mid-transaction left it open; its own
                    # ROLLBACK may already be queued, hence the suppress.
                    with suppress(sqlite3.Error):
                        await conn.execute("ROLLBACK")
                yield conn
            except sqlite3.Error as exc:
                raise _unavailable(exc) from exc

    @asynccontextmanager
    async def _tx(self, begin: str = "BEGIN IMMEDIATE") -> AsyncIterator[aiosqlite.Connection]:
        """One transaction; IMMEDIATE takes the write lock up front so a
        read-then-write can never fail half way with SQLITE_BUSY."""
        async with self._locked() as conn:
            await conn.execute(begin)
            try:
                yield conn
                await conn.execute("COMMIT")
            except BaseException:
                with suppress(sqlite3.Error):
                    await conn.execute("ROLLBACK")
                raise

    # --- queue mode: ingest -----------------------------------------------------

    async def ingest(self, event: NewEvent) -> Ingested:
        if self._batcher is None:
            raise StoreUnavailable("the store is not open")
        return await self._batcher.submit(event)

    async def _commit_batch(self, events: Sequence[NewEvent]) -> list[Ingested]:
        now = self.clock()
        token = _token()
        # Copies of one (route, key) in the same batch: the first is claimed,
        # the rest are its duplicates (one upsert cannot touch a row twice).
        groups: dict[tuple[str, str], list[int]] = {}
        for index, event in enumerate(events):
            groups.setdefault((event.route, event.key), []).append(index)
        params: list[Any] = []
        for indexes in groups.values():
            first, rest = events[indexes[0]], [events[i] for i in indexes[1:]]
            mismatched = sum(e.fingerprint != first.fingerprint for e in rest)
            params += q.event_params(first, now, len(rest), mismatched, token)
        async with self._tx() as conn:
            rows = await conn.execute_fetchall(q.ingest_events(len(groups)), params)
            # RETURNING order is unspecified: map back by (route, key).
            by_key = {(str(r["route"]), str(r["key"])): r for r in rows}
            deliveries: list[tuple[int, str, str, str | None]] = []
            revive: list[int] = []
            fixups: list[tuple[int, int]] = []
            for (route, key), indexes in groups.items():
                row, first = by_key[(route, key)], events[indexes[0]]
                if row["claim_token"] == token:
                    deliveries += [
                        (row["id"], route, up, first.ordering_key) for up in first.upstreams
                    ]
                    continue
                if first.revive_dead:
                    revive.append(int(row["id"]))
                # The upsert compared only the first copy with the stored fingerprint.
                extra = sum(events[i].fingerprint != row["fingerprint"] for i in indexes[1:])
                if extra:
                    fixups.append((extra, int(row["id"])))
            step = _MAX_VARIABLES // q.DELIVERY_PARAMS
            for start in range(0, len(deliveries), step):
                chunk = deliveries[start : start + step]
                await conn.execute(q.insert_deliveries(len(chunk)), q.delivery_params(chunk, now))
            revived: dict[int, int] = {}
            if revive:
                for r in await conn.execute_fetchall(
                    q.revive(len(revive)), [now, now, now, *revive]
                ):
                    revived[int(r[0])] = revived.get(int(r[0]), 0) + 1
            if fixups:
                await conn.executemany(q.ADD_MISMATCHES, fixups)
        results: dict[int, Ingested] = {}
        for (route, key), indexes in groups.items():
            row = by_key[(route, key)]
            event_id, stored = int(row["id"]), str(row["fingerprint"])
            claimed = row["claim_token"] == token
            results[indexes[0]] = Ingested(event_id, claimed, stored, revived.get(event_id, 0))
            for index in indexes[1:]:
                results[index] = Ingested(event_id, False, stored)
        return [results[index] for index in range(len(events))]

    async def undelivered_counts(self) -> dict[str, int]:
        async with self._locked() as conn:
            rows = await conn.execute_fetchall(q.UNDELIVERED_COUNTS)
        return {str(r[0]): int(r[1]) for r in rows}

    # --- queue mode: delivery ---------------------------------------------------

    async def lease_due(
        self, route: str, upstream: str, limit: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> list[Lease]:
        if limit < 1:
            return []
        now = self.clock()
        args = {"route": route, "upstream": upstream, "now": now, "limit": limit}
        async with self._tx() as conn:
            leased = list(
                await conn.execute_fetchall(
                    q.lease_due(hold_dead), {**args, "token": _token(), "expires": now + lease_ttl}
                )
            )
            if not leased:
                return []
            ids = sorted({int(r["event_id"]) for r in leased})
            events = {
                int(e["id"]): e
                for e in await conn.execute_fetchall(q.lease_payloads(len(ids)), ids)
            }
            # Stale suppression reads the key's delivered version here, in the
            # leasing transaction; only ordered events that carry a version need it.
            keys = sorted(
                {
                    str(r["ordering_key"])
                    for r in leased
                    if r["ordering_key"] is not None
                    and events[int(r["event_id"])]["version"] is not None
                }
            )
            delivered: dict[str, str] = {}
            if keys:
                rows = await conn.execute_fetchall(
                    q.delivered_versions(len(keys)), [route, upstream, *keys]
                )
                delivered = {str(r[0]): str(r[1]) for r in rows}
        leased.sort(key=lambda r: (r["next_attempt_at"], r["id"]))
        return [
            q.lease_from_rows(
                r,
                events[int(r["event_id"])],
                delivered.get(r["ordering_key"]) if r["ordering_key"] is not None else None,
            )
            for r in leased
        ]

    async def next_due_at(
        self, route: str, upstream: str, *, hold_dead: bool = False
    ) -> float | None:
        async with self._locked() as conn:
            rows = list(
                await conn.execute_fetchall(
                    q.next_due(hold_dead), {"route": route, "upstream": upstream}
                )
            )
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def finish_attempt(self, lease: Lease, attempt: Attempt | None, outcome: Outcome) -> bool:
        # Group-committed like ingest: at thousands of deliveries a second, one
        # fsync per finish would be the ceiling.
        if self._finisher is None:
            raise StoreUnavailable("the store is not open")
        return await self._finisher.submit((lease, attempt, outcome))

    async def _finish_batch(self, items: Sequence[_Finish]) -> list[bool]:
        now = self.clock()
        async with self._tx() as conn:
            params: list[Any] = []
            for lease, attempt, outcome in items:
                params += q.finish_row(lease, attempt, outcome, now)
            params.append(now)
            rows = await conn.execute_fetchall(q.finish_many(len(items)), params)
            done = {int(r[0]) for r in rows}
            # A fenced finish (its lease lost) logs no attempt: the new holder's counts.
            tried = [
                (lease.delivery_id, a.started_at, a.duration_ms, a.status, a.error)
                for lease, a, _ in items
                if a is not None and lease.delivery_id in done
            ]
            if tried:
                await conn.execute(q.insert_attempts(len(tried)), [x for row in tried for x in row])
            for lease, _, outcome in items:
                if (
                    outcome.state == "delivered"
                    and lease.delivery_id in done
                    and lease.ordering_key is not None
                    and lease.version is not None
                ):
                    # Same transaction as the state change: the remembered version
                    # and "delivered" are committed together or not at all.
                    pk = (lease.route, lease.upstream, lease.ordering_key)
                    found = list(await conn.execute_fetchall(q.DELIVERED_VERSION, pk))
                    known = str(found[0][0]) if found else None
                    await conn.execute(
                        q.SET_DELIVERED_VERSION,
                        (*pk, versions.highest(known, lease.version), now),
                    )
        return [lease.delivery_id in done for lease, _, _ in items]

    async def recover(self) -> int:
        # open() holds the file's lock: no other live process can hold a lease here.
        now = self.clock()
        async with self._tx() as conn:
            deliveries = await conn.execute(q.RECOVER_DELIVERIES, {"now": now})
            claims = await conn.execute(q.RECOVER_SYNC_CLAIMS)
        return int(deliveries.rowcount) + int(claims.rowcount)

    async def release_expired_leases(self) -> int:
        now = self.clock()
        async with self._locked() as conn:
            cursor = await conn.execute(q.RELEASE_EXPIRED, {"now": now})
        return cursor.rowcount

    # --- sync mode --------------------------------------------------------------

    async def claim_sync(self, event: NewEvent, lease_ttl: float) -> SyncClaim:
        # Each round is one transaction; a row can vanish between rounds only
        # if its holder released it, and then the next round inserts afresh.
        for _ in range(16):
            now, token = self.clock(), _token()
            params = q.event_params(event, now, 0, 0, token)
            async with self._tx() as conn:
                rows = list(
                    await conn.execute_fetchall(
                        q.CLAIM_SYNC, [*params, token, now + lease_ttl, now]
                    )
                )
                if rows:
                    taken_over = rows[0]["claim_token"] != token
                    return Acquired(int(rows[0]["id"]), token, taken_over)
                rows = list(
                    await conn.execute_fetchall(
                        q.COUNT_SYNC_DUPLICATE, (now, event.fingerprint, event.route, event.key)
                    )
                )
                if rows:
                    return q.sync_claim_from_row(rows[0])
        raise StoreUnavailable(f"sync claim of {event.route}/{event.key} kept changing hands")

    async def peek_sync(self, route: str, key: str) -> SyncClaim | None:
        async with self._locked() as conn:
            rows = list(await conn.execute_fetchall(q.PEEK_SYNC, (route, key)))
        return q.sync_claim_from_row(rows[0]) if rows else None

    async def complete_sync(self, event_id: int, token: str, response: StoredResponse) -> bool:
        params = (
            response.status,
            response.content_type,
            response.body,
            int(response.body_omitted),
            event_id,
            token,
        )
        async with self._locked() as conn:
            cursor = await conn.execute(q.COMPLETE_SYNC, params)
        return cursor.rowcount == 1

    async def release_sync(self, event_id: int, token: str) -> bool:
        async with self._locked() as conn:
            cursor = await conn.execute(q.RELEASE_SYNC, (event_id, token))
        return cursor.rowcount == 1

    # --- operations -------------------------------------------------------------

    async def get_event(self, event_id: int) -> EventInfo | None:
        async with self._tx("BEGIN") as conn:
            rows = list(
                await conn.execute_fetchall(q.SELECT_EVENTS + " WHERE e.id = ?", (event_id,))
            )
            if not rows:
                return None
            deliveries = await conn.execute_fetchall(q.deliveries_of(1), (event_id,))
            attempts = await conn.execute_fetchall(q.ATTEMPTS_OF, (event_id,))
        return q.event_info(rows[0], deliveries, attempts)

    async def list_events(
        self, flt: EventFilter, limit: int, before_id: int | None = None
    ) -> list[EventInfo]:
        where, params = q.filter_sql(flt)
        if before_id is not None:
            where += " AND e.id < ?"
            params.append(before_id)
        sql = f"{q.SELECT_EVENTS} WHERE {where} ORDER BY e.id DESC LIMIT ?"
        async with self._tx("BEGIN") as conn:
            rows = list(await conn.execute_fetchall(sql, [*params, limit]))
            ids = [int(r["id"]) for r in rows]
            deliveries = (
                list(await conn.execute_fetchall(q.deliveries_of(len(ids)), ids)) if ids else []
            )
        by_event: dict[int, list[sqlite3.Row]] = {}
        for d in deliveries:
            by_event.setdefault(int(d["event_id"]), []).append(d)
        return [q.event_info(r, by_event.get(int(r["id"]), []), []) for r in rows]

    async def requeue(self, flt: EventFilter) -> int:
        where, params = q.filter_sql(flt)
        states = [flt.state] if flt.state in ("dead", "stale") else ["dead", "stale"]
        now = self.clock()
        async with self._locked() as conn:
            cursor = await conn.execute(
                q.requeue(where, len(states)), [now, now, now, *states, *params]
            )
        return cursor.rowcount

    async def requeue_all(self, flt: EventFilter) -> int:
        where, params = q.filter_sql(flt)
        now = self.clock()
        async with self._locked() as conn:
            cursor = await conn.execute(q.requeue_all(where), [now, now, now, *params])
        return cursor.rowcount

    async def purge(self, flt: EventFilter) -> int:
        where, params = q.filter_sql(flt)
        async with self._locked() as conn:
            cursor = await conn.execute(q.purge(where), params)
        return cursor.rowcount

    async def purge_expired(self, seen_before: float, dead_before: float, limit: int) -> int:
        args = {"seen": seen_before, "dead": dead_before, "limit": limit}
        async with self._locked() as conn:
            cursor = await conn.execute(q.PURGE_EXPIRED, args)
            purged = cursor.rowcount
            await conn.execute(q.PURGE_VERSIONS, {"seen": seen_before, "limit": limit})
        return purged

    async def drop_payloads(self, delivered_before: float, limit: int) -> int:
        async with self._locked() as conn:
            cursor = await conn.execute(
                q.DROP_PAYLOADS, {"before": delivered_before, "limit": limit}
            )
        return cursor.rowcount

    # --- observability ----------------------------------------------------------

    async def backlog(self) -> dict[str, RouteBacklog]:
        async with self._tx("BEGIN") as conn:
            counts = await conn.execute_fetchall(q.BACKLOG_COUNTS)
            oldest = await conn.execute_fetchall(q.OLDEST_OPEN)
        by_route: dict[str, dict[str, Any]] = {}
        for route, state, n in counts:
            by_route.setdefault(str(route), {})[str(state)] = int(n)
        for route, received_at in oldest:
            by_route.setdefault(str(route), {})["oldest_open_at"] = float(received_at)
        return {route: RouteBacklog(route, **fields) for route, fields in by_route.items()}

    async def open_deliveries(self) -> dict[tuple[str, str], int]:
        async with self._locked() as conn:
            rows = await conn.execute_fetchall(q.OPEN_BY_UPSTREAM)
        return {(str(r[0]), str(r[1])): int(r[2]) for r in rows}


def _unavailable(exc: BaseException) -> BaseException:
    """A fresh exception per caller: one instance raised in many tasks would
    grow a shared traceback."""
    if isinstance(exc, StoreUnavailable):
        err = StoreUnavailable(str(exc))
    elif isinstance(exc, sqlite3.Error):
        err = StoreUnavailable(f"SQLite: {exc}")
    else:
        err = StoreUnavailable(f"store failure: {exc!r}")
    err.__cause__ = exc
    return err
