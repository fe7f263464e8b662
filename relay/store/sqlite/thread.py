"""One SQLite connection on one thread; every call runs a whole transaction there.

aiosqlite hops to its thread and back for every statement. Under load each hop
waits its turn in a busy event loop, so a five-statement group commit took
~25 ms of round trips and capped ingest at ~1,300 events/s. Here a transaction
is one Python function run on the connection's thread: one hop, however many
statements. It also keeps transactions whole when a caller is cancelled: the
function finishes (COMMIT or ROLLBACK) on the thread regardless.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any, Literal, TypeVar

from relay.errors import StoreUnavailable
from relay.store.records import new_token, replica_name
from relay.store.sealing import CLEAR_SEALER, Sealer

T = TypeVar("T")
Sync = Literal["FULL", "NORMAL"]


def transaction(
    conn: sqlite3.Connection,
    fn: Callable[[sqlite3.Connection], T],
    *,
    begin: str = "BEGIN IMMEDIATE",
    sync: Sync = "FULL",
) -> T:
    """Run ``fn`` in one transaction. IMMEDIATE takes the write lock up front, so a
    read-then-write cannot fail half way with SQLITE_BUSY.

    ``sync="NORMAL"`` commits without an fsync: for state a crash may lose
    because start-up recovery rebuilds it (leases, sync claims). The next FULL
    commit makes it durable anyway (the WAL is written in order).
    """
    if sync != "FULL":
        conn.execute(f"PRAGMA synchronous = {sync}")
    try:
        conn.execute(begin)
        try:
            result = fn(conn)
            conn.execute("COMMIT")
        except BaseException:
            with suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            raise
    finally:
        if sync != "FULL":
            conn.execute("PRAGMA synchronous = FULL")
    return result


class SQLiteThread:
    """The connection and the single thread that owns it."""

    def __init__(self) -> None:
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def is_open(self) -> bool:
        return self._conn is not None

    async def open(self, connect: Callable[[], sqlite3.Connection]) -> None:
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="sqlite")
        loop = asyncio.get_running_loop()
        try:
            self._conn = await loop.run_in_executor(self._executor, connect)
        except BaseException:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    async def call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn(connection)`` on the thread; calls run one at a time, in order."""
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise StoreUnavailable("the store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(executor, fn, conn)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite: {exc}") from exc

    def post(self, fn: Callable[[sqlite3.Connection], None]) -> None:
        """Queue ``fn(connection)`` on the thread with no answer: ``fn`` reports back
        itself (``relay.store.sqlite.pull``). Raises ``StoreUnavailable`` once closed."""
        conn, executor = self._conn, self._executor
        if conn is None or executor is None:
            raise StoreUnavailable("the store is not open")
        try:
            executor.submit(fn, conn)
        except RuntimeError as exc:  # shut down between the check and the submit
            raise StoreUnavailable("the store is closed") from exc

    async def close(self) -> None:
        conn, executor = self._conn, self._executor
        self._conn = self._executor = None
        if executor is None:
            return
        loop = asyncio.get_running_loop()
        if conn is not None:
            with suppress(sqlite3.Error):
                await loop.run_in_executor(executor, conn.close)
        executor.shutdown(wait=True)


class SQLiteAccess:
    """What store methods need from the connection: whole transactions, single
    statements, reads. ``SQLiteStore`` builds on it; so do its operation mixins."""

    clock: Callable[[], float]
    replica_id: str = ""
    # Seals bodies, headers and kept answers (storage.encryption); in clear without a key.
    sealer: Sealer = CLEAR_SEALER
    # Why new events are refused (a storage cap with only in-window keys left), if they are.
    full: str | None = None

    def __init__(self) -> None:
        self._db = SQLiteThread()
        # Inspection reads (the admin API, the console, the scrape's gauges) on a
        # connection and thread of their own: WAL lets them read while the writer
        # commits, so a heavy page never holds up an ingest batch.
        self._reader = SQLiteThread()

    def token(self) -> str:
        """A lease or claim token that names its holder (see ``Store.replica_id``)."""
        if not self.replica_id:
            self.replica_id = replica_name()
        return f"{self.replica_id}/{new_token()}"

    async def _tx(
        self,
        fn: Callable[[sqlite3.Connection], T],
        *,
        begin: str = "BEGIN IMMEDIATE",
        sync: Sync = "FULL",
    ) -> T:
        return await self._db.call(lambda c: transaction(c, fn, begin=begin, sync=sync))

    async def _one(self, sql: str, params: Any = ()) -> int:
        """One autocommit statement; its rowcount."""
        return await self._db.call(lambda c: int(c.execute(sql, params).rowcount))

    async def _rows(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return await self._db.call(lambda c: c.execute(sql, params).fetchall())

    async def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        """``fn`` in one read transaction on the reader (one snapshot for all it reads)."""
        return await self._reader.call(lambda c: transaction(c, fn, begin="BEGIN"))

    async def _read_rows(self, sql: str, params: Any = ()) -> list[sqlite3.Row]:
        return await self._reader.call(lambda c: c.execute(sql, params).fetchall())
