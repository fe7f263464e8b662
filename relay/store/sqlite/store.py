"""The SQLite store: the embedded default for a single relay process.

One connection on one thread (``thread``) in WAL mode with
``synchronous=FULL``, so a commit is on disk before the sender is acked. Each
method's transaction is one function run on that thread, so transactions never
interleave. Queue-mode ingests and delivery finishes are group-committed
(``relay.store.batch``); leases and sync claims commit without an fsync,
because start-up recovery rebuilds them anyway. Sync mode is in
``sync``, inspection and retention in ``ops``.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from relay import versions
from relay.errors import StoreFull, StoreUnavailable
from relay.store import common_sql
from relay.store import rows as rowmap
from relay.store.base import (
    Attempt,
    Clock,
    Ingested,
    Lease,
    NewEvent,
    Outcome,
    Pause,
    new_token,
)
from relay.store.batch import BatchStats, GroupCommitter, IngestBatch
from relay.store.migrate import load_migrations, migrate_sqlite
from relay.store.sealing import CLEAR_SEALER, Sealer
from relay.store.sqlite import files
from relay.store.sqlite import sql as q
from relay.store.sqlite.inline import SQLiteInline, lease_rows
from relay.store.sqlite.notices import SQLiteNotices
from relay.store.sqlite.ops import SQLiteOperations
from relay.store.sqlite.pull import PulledCommitter
from relay.store.sqlite.replicas import SQLiteReplicas
from relay.store.sqlite.sealed import SQLiteKeys, check_keys
from relay.store.sqlite.space import SQLiteSpace, prepare_vacuum
from relay.store.sqlite.sync import SQLiteSyncMode
from relay.store.sqlite.thread import T, transaction

# SQLITE_MAX_VARIABLE_NUMBER's default since SQLite 3.32 (we need 3.35+ anyway
# for RETURNING).
_MAX_VARIABLES = 32766
_MAX_BATCH = _MAX_VARIABLES // q.EVENT_PARAMS
# An ingest batch while delivery outcomes wait is never smaller than this.
INGEST_SHARE_FLOOR: Final = 8


_Finish = tuple[Lease, Attempt | None, Outcome]


class SQLiteStore(
    SQLiteOperations,
    SQLiteSyncMode,
    SQLiteInline,
    SQLiteReplicas,
    SQLiteKeys,
    SQLiteSpace,
    SQLiteNotices,
):
    """``relay.store.base.Store`` on one SQLite file."""

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        max_batch: int = 256,
        busy_timeout: float = 5.0,
        sealer: Sealer = CLEAR_SEALER,
    ) -> None:
        if not 1 <= max_batch <= _MAX_BATCH:
            raise ValueError(f"max_batch must be between 1 and {_MAX_BATCH}")
        self.path = Path(path)
        self.clock = clock
        self.max_batch = max_batch
        self.busy_timeout = busy_timeout
        self.sealer = sealer
        self.stats = BatchStats()
        super().__init__()
        self._lock_fd: int | None = None
        self.watch = files.Watch(self.path)
        self._batcher: PulledCommitter[NewEvent, Ingested] | None = None
        self._finisher: PulledCommitter[_Finish, bool] | None = None
        self._completer = None
        self._claimer = None
        self.finish_stats = BatchStats()

    @classmethod
    def from_url(
        cls,
        url: str,
        *,
        clock: Clock = time.time,
        max_batch: int = 256,
        busy_timeout: float = 5.0,
        sealer: Sealer = CLEAR_SEALER,
    ) -> SQLiteStore:
        """``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``."""
        prefix = "sqlite:///"
        rest = url[len(prefix) :] if url.startswith(prefix) else ""
        if not rest.strip("/") or "?" in rest or rest.endswith("/"):
            raise ValueError(f"not a SQLite file url: {url!r} (sqlite:///relative/path.db)")
        path = Path(rest)
        return cls(path, clock=clock, max_batch=max_batch, busy_timeout=busy_timeout, sealer=sealer)

    # --- lifecycle ------------------------------------------------------------

    async def open(self) -> None:
        if self._db.is_open:
            return
        self._lock_file()
        try:
            await self._db.open(self._connect)
            await self._reader.open(self._connect_reader)
            self.watch.opened()
        except BaseException as exc:
            await self._db.close()
            self._unlock_file()
            if isinstance(exc, sqlite3.Error):
                raise StoreUnavailable(f"cannot open {self.path}: {exc}") from exc
            raise
        self._claimer = self._committer(self._claim_batch, BatchStats())
        self._completer = self._committer(self._complete_batch, BatchStats())
        self._inliner = self._committer(self._inline_batch, BatchStats())
        self._answerer = self._committer(self._answer_batch, BatchStats())
        # The two busiest: batches taken by the writer thread itself (see ``pull``).
        self._finisher = self._pulled(self._finish_batch, self.finish_stats)
        self._batcher = self._pulled(self._commit_batch, self.stats, self._ingest_share)

    def _committer(
        self, commit: Any, stats: BatchStats, share: Callable[[], int | None] | None = None
    ) -> GroupCommitter[Any, Any]:
        async def guarded(items: Any) -> Any:
            await self.watch.check(self._db.call)
            return await commit(items)

        return GroupCommitter(
            guarded,
            max_batch=self.max_batch,
            on_error=_unavailable,
            closed_error=lambda: StoreUnavailable("the store is closed"),
            stats=stats,
            share=share,
        )

    def _pulled(
        self, commit: Any, stats: BatchStats, share: Callable[[], int | None] | None = None
    ) -> PulledCommitter[Any, Any]:
        return PulledCommitter(
            self._db.post,
            commit,
            max_batch=self.max_batch,
            on_error=_unavailable,
            closed_error=lambda: StoreUnavailable("the store is closed"),
            stats=stats,
            share=share,
        )

    def _ingest_share(self) -> int | None:
        """Delivery's fair share of the one writer thread. Its transactions run in
        turn, so with ingest and delivery both waiting each commits a batch per
        round: an ingest batch no larger than the last batch of delivery outcomes
        gives delivery half of the rounds' rows. A busy listener (64 connections
        against 16 delivery slots) otherwise took two thirds and the backlog grew
        while the backend sat idle. Senders wait a little longer for their ack."""
        finisher = self._finisher
        if finisher is None or not finisher.busy:
            return None
        return max(INGEST_SHARE_FLOOR, finisher.stats.last_batch_size)

    def _connection(self) -> sqlite3.Connection:
        conn = sqlite3.connect(
            self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False
        )
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        return conn

    def _connect(self) -> sqlite3.Connection:
        """On the store's thread: connect, set the pragmas, migrate."""
        conn = self._connection()
        try:
            # First: a new file takes its auto-vacuum mode before its first page is written.
            self.auto_vacuum = prepare_vacuum(conn, self.path)
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()
            if str(mode[0]).lower() != "wal":
                raise StoreUnavailable(f"{self.path}: cannot switch to WAL (got {mode[0]})")
            conn.execute("PRAGMA synchronous = FULL")
            conn.execute("PRAGMA foreign_keys = ON")
            migrate_sqlite(conn, load_migrations("relay.store.sqlite", "migrations"), self.clock())
            check_keys(conn, self.sealer, self.clock())
        except BaseException:
            conn.close()
            raise
        return conn

    def _connect_reader(self) -> sqlite3.Connection:
        """On the reader's thread, once the writer has migrated: reads only."""
        conn = self._connection()
        conn.execute("PRAGMA query_only = ON")
        return conn

    async def close(self) -> None:
        if self._db.is_open:
            with contextlib.suppress(StoreUnavailable):
                await self.deregister()
        batchers = (self._batcher, self._finisher, self._completer, self._claimer)
        for batcher in (*batchers, self._inliner, self._answerer):
            if batcher is not None:
                await batcher.close()
        self._batcher = self._finisher = self._completer = self._claimer = None
        self._inliner = self._answerer = None
        await self._reader.close()
        await self._db.close()
        self._unlock_file()

    def _lock_file(self) -> None:
        """One relay process per database: SQLite would allow a second one, but its
        start-up recovery would then take leases a live process still holds."""
        for loose in files.prepare(self.path):
            files.log.warning("store_file_not_private", detail=loose)
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
            await self.watch.check(self._db.call)
            await self._db.call(lambda c: c.execute("SELECT 1").fetchall())
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

    def _commit_batch(self, conn: sqlite3.Connection, events: Sequence[NewEvent]) -> list[Ingested]:
        """On the writer thread (``pull``): one batch of ingests, one transaction."""
        now = self.clock()
        batch = IngestBatch(events, new_token())
        params: list[Any] = []
        for first, copies, mismatched in batch.upserts():
            params += q.event_params(first, now, copies, mismatched, batch.token, self.sealer)

        def run(c: sqlite3.Connection) -> tuple[dict[tuple[str, str], Any], dict[int, int]]:
            rows = c.execute(q.ingest_events(len(batch.groups)), params).fetchall()
            # RETURNING order is unspecified: map back by (route, key).
            by_key = {(str(r["route"]), str(r["key"])): r for r in rows}
            todo = batch.followups(by_key)
            step = _MAX_VARIABLES // q.DELIVERY_PARAMS
            for start in range(0, len(todo.deliveries), step):
                chunk = todo.deliveries[start : start + step]
                c.execute(q.insert_deliveries(len(chunk)), q.delivery_params(chunk, now))
            revived: dict[int, int] = {}
            if todo.revive:
                for r in c.execute(q.revive(len(todo.revive)), [now, now, now, *todo.revive]):
                    revived[int(r[0])] = revived.get(int(r[0]), 0) + 1
            if todo.mismatches:
                c.executemany(q.ADD_MISMATCHES, [(n, eid) for eid, n in todo.mismatches])
            return by_key, revived

        by_key, revived = self._on_writer(conn, run)
        return batch.results(by_key, revived)

    def _on_writer(self, conn: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T]) -> T:
        """A group commit's transaction, on the writer thread: only while the path
        still names the file that is open."""
        self.watch.check_on_writer(conn)
        return transaction(conn, fn)

    async def undelivered_counts(self) -> dict[str, int]:
        rows = await self._rows(q.UNDELIVERED_COUNTS)
        return {str(r[0]): int(r[1]) for r in rows}

    # --- queue mode: delivery ---------------------------------------------------

    async def lease_due(
        self, route: str, upstream: str, limit: int, lease_ttl: float, *, hold_dead: bool = False
    ) -> list[Lease]:
        if limit < 1:
            return []
        args = {"route": route, "upstream": upstream, "limit": limit}
        return await self._lease(q.lease_due(hold_dead), args, lease_ttl)

    async def _lease(self, sql: str, args: dict[str, Any], lease_ttl: float) -> list[Lease]:
        now = self.clock()
        lease_args = {**args, "now": now, "token": self.token(), "expires": now + lease_ttl}
        # A lease lost in a crash is rebuilt by start-up recovery: no fsync needed.
        leases: list[Lease] = await self._tx(
            lambda c: lease_rows(c, sql, lease_args, self.sealer), sync="NORMAL"
        )
        return leases

    async def next_due_at(
        self, route: str, upstream: str, *, hold_dead: bool = False
    ) -> float | None:
        rows = await self._rows(q.next_due(hold_dead), {"route": route, "upstream": upstream})
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    async def pauses(self) -> list[Pause]:
        return [rowmap.pause(r) for r in await self._rows(common_sql.PAUSES)]

    async def make_due(self, route: str, upstream: str) -> int:
        return await self._one(
            q.MAKE_DUE, {"route": route, "upstream": upstream, "now": self.clock()}
        )

    async def count_due(self, route: str, upstream: str) -> int:
        args = {"route": route, "upstream": upstream, "now": self.clock()}
        rows = await self._rows(q.COUNT_DUE, args)
        return int(rows[0][0])

    async def finish_attempt(self, lease: Lease, attempt: Attempt | None, outcome: Outcome) -> bool:
        # Group-committed like ingest: at thousands of deliveries a second, one
        # fsync per finish would be the ceiling.
        if self._finisher is None:
            raise StoreUnavailable("the store is not open")
        return await self._finisher.submit((lease, attempt, outcome))

    def _finish_batch(self, conn: sqlite3.Connection, items: Sequence[_Finish]) -> list[bool]:
        """On the writer thread (``pull``): one batch of outcomes, one transaction."""
        now = self.clock()
        # One multi-row UPDATE reports success by delivery id, so it takes one item
        # per delivery; a second finish of the same delivery in this batch (an old
        # lease holder racing the new one) is applied on its own, after.
        bulk: list[int] = []
        rest: list[int] = []
        seen: set[int] = set()
        for index, (lease, _, _) in enumerate(items):
            (rest if lease.delivery_id in seen else bulk).append(index)
            seen.add(lease.delivery_id)
        params: list[Any] = []
        for index in bulk:
            params += q.finish_row(*items[index], now)
        params.append(now)

        def run(c: sqlite3.Connection) -> list[bool]:
            ok = [False] * len(items)
            done = {int(r[0]) for r in c.execute(q.finish_many(len(bulk)), params)}
            for index in bulk:
                ok[index] = items[index][0].delivery_id in done
            for index in rest:
                lease, attempt, outcome = items[index]
                sql = q.FINISH_ATTEMPT if attempt is not None else q.FINISH_UNTRIED
                ok[index] = (
                    c.execute(sql, q.finish_params(lease, attempt, outcome, now)).rowcount == 1
                )
            # A fenced finish (its lease lost) logs no attempt: the new holder's counts.
            tried = [
                (
                    lease.delivery_id,
                    a.started_at,
                    a.duration_ms,
                    a.status,
                    a.error,
                    self.sealer.seal(a.answer, rowmap.ANSWER),
                )
                for (lease, a, _), good in zip(items, ok, strict=True)
                if a is not None and good
            ]
            if tried:
                c.execute(q.insert_attempts(len(tried)), [x for row in tried for x in row])
            for (lease, _, outcome), good in zip(items, ok, strict=True):
                if (
                    good
                    and outcome.state == "delivered"
                    and lease.ordering_key is not None
                    and lease.version is not None
                ):
                    # Same transaction as the state change: the remembered version
                    # and "delivered" are committed together or not at all.
                    pk = (lease.route, lease.upstream, lease.ordering_key)
                    found = c.execute(q.DELIVERED_VERSION, pk).fetchone()
                    known = str(found[0]) if found else None
                    c.execute(
                        q.SET_DELIVERED_VERSION,
                        (*pk, versions.highest(known, lease.version), now),
                    )
            return ok

        return self._on_writer(conn, run)

    async def recover(self) -> int:
        # open() holds the file's lock: no other live process can hold a lease here.
        now = self.clock()

        def run(c: sqlite3.Connection) -> int:
            deliveries = c.execute(q.RECOVER_DELIVERIES, {"now": now}).rowcount
            claims = c.execute(q.RECOVER_SYNC_CLAIMS).rowcount
            return int(deliveries) + int(claims)

        recovered: int = await self._tx(run)
        return recovered

    async def release_expired_leases(self) -> int:
        return await self._one(q.RELEASE_EXPIRED, {"now": self.clock()})


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
