"""The PostgreSQL store's connections: an asyncpg pool, transactions that are
retried when PostgreSQL aborts them as deadlocks, driver errors translated to
``StoreUnavailable`` where they enter, and schema migrations."""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import asyncpg  # type: ignore[import-untyped]

from relay.errors import SchemaTooNew, StoreUnavailable
from relay.logging import get_logger
from relay.store.migrate import Migration, load_migrations

T = TypeVar("T")
# What the driver raises for a server, network or protocol failure. TimeoutError
# (a pool acquire, connect or command_timeout) is an OSError.
DRIVER_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
)
log = get_logger()
RETRIES = 5  # deadlocks and serialization failures: the transaction runs again

MIGRATION_LOCK = (
    "SELECT pg_advisory_xact_lock(hashtextextended("
    "'webhook-relay.migrate' || chr(10) || coalesce(current_schema(), ''), 0))"
)
SCHEMA_MIGRATIONS = (
    "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY,"
    " name TEXT NOT NULL, applied_at DOUBLE PRECISION NOT NULL)"
)
# Whether each applied migration leaves a schema older releases cannot use.
SCHEMA_BREAKING = (
    "ALTER TABLE schema_migrations ADD COLUMN IF NOT EXISTS breaking BOOLEAN NOT NULL DEFAULT FALSE"
)
NEWER_BREAKING = (
    "SELECT version, name FROM schema_migrations WHERE version > $1 AND breaking ORDER BY version"
)


def affected(status: str) -> int:
    """The row count of a command tag such as ``UPDATE 3`` or ``DELETE 0``."""
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


class Database:
    """A pool on one database (schema), opened with the schema migrated."""

    def __init__(
        self,
        dsn: str,
        *,
        min_size: int = 1,
        max_size: int = 10,
        connect_timeout: float = 10.0,
        command_timeout: float = 30.0,
        acquire_timeout: float = 10.0,
        server_settings: Mapping[str, str] | None = None,
    ) -> None:
        if not 0 <= min_size <= max_size or max_size < 1:
            raise ValueError("pool sizes must satisfy 0 <= min_size <= max_size, max_size >= 1")
        parts = urlsplit(dsn)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError("not a PostgreSQL url (postgresql://user@host:port/database)")
        self._dsn = dsn
        self._password = parts.password
        # Where the database is, for messages: never the password.
        self.display = f"{parts.hostname or 'localhost'}:{parts.port or 5432}{parts.path or '/'}"
        # Invariant 1 (no ack without a durable commit) whatever the server's default.
        settings = {"synchronous_commit": "on"}
        if "application_name" not in parse_qs(parts.query):
            settings["application_name"] = "webhook-relay"
        self.server_settings = {**settings, **(server_settings or {})}
        self.min_size, self.max_size = min_size, max_size
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self.acquire_timeout = acquire_timeout
        self._pool: Any = None

    @property
    def is_open(self) -> bool:
        return self._pool is not None

    async def open(self, now: float) -> None:
        """Connect and bring the schema to the newest version."""
        if self._pool is not None:
            return
        try:
            pool = await asyncpg.create_pool(
                dsn=self._dsn,
                min_size=self.min_size,
                max_size=self.max_size,
                timeout=self.connect_timeout,
                command_timeout=self.command_timeout,
                server_settings=self.server_settings,
            )
        except DRIVER_ERRORS as exc:
            raise self.unavailable(exc, "cannot connect") from exc
        try:
            async with pool.acquire(timeout=self.acquire_timeout) as conn:
                await migrate(conn, load_migrations("relay.store.postgres", "migrations"), now)
        except BaseException as exc:
            pool.terminate()
            if isinstance(exc, DRIVER_ERRORS):
                raise self.unavailable(exc, "cannot migrate the schema") from exc
            raise
        self._pool = pool

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await asyncio.wait_for(pool.close(), self.command_timeout)
            except DRIVER_ERRORS:  # TimeoutError included: a connection never came back
                pool.terminate()

    def unavailable(self, exc: BaseException, doing: str | None = None) -> StoreUnavailable:
        """A fresh, short exception per caller (one shared instance would grow a
        shared traceback), naming the server but never its password."""
        if isinstance(exc, StoreUnavailable) and doing is None:
            err = StoreUnavailable(str(exc))
        else:
            lines = str(exc).strip().splitlines()
            detail = f"{type(exc).__name__}: {lines[0] if lines else ''}".rstrip(": ")[:300]
            if self._password:
                detail = detail.replace(self._password, "***")
            where = f"PostgreSQL {self.display}" + (f": {doing}" if doing else "")
            err = StoreUnavailable(f"{where}: {detail}")
        err.__cause__ = exc
        return err

    @asynccontextmanager
    async def acquire(self) -> AsyncIterator[Any]:
        """A pooled connection; driver errors leave as ``StoreUnavailable``."""
        pool = self._pool
        if pool is None:
            raise StoreUnavailable("the store is not open")
        try:
            async with pool.acquire(timeout=self.acquire_timeout) as conn:
                yield conn
        except DRIVER_ERRORS as exc:
            raise self.unavailable(exc) from exc

    async def tx(self, work: Callable[[Any], Awaitable[T]], *, snapshot: bool = False) -> T:
        """Run ``work(conn)`` in one transaction, again if PostgreSQL aborted it as a
        deadlock or serialization failure (nothing of it was committed).

        READ COMMITTED explicitly, whatever the server's default: lease_due
        relies on each statement taking a fresh snapshot. ``snapshot``: a
        read-only REPEATABLE READ transaction, for reads that must agree.
        """
        isolation = "repeatable_read" if snapshot else "read_committed"
        async with self.acquire() as conn:
            tries = 0
            while True:
                tries += 1
                try:
                    async with conn.transaction(isolation=isolation, readonly=snapshot):
                        return await work(conn)
                except asyncpg.TransactionRollbackError:
                    if tries >= RETRIES:
                        raise
                await asyncio.sleep(random.uniform(0, 0.01 * tries))

    async def run(self, sql: str, *args: Any) -> int:
        """One statement on its own (autocommit); how many rows it changed."""
        async with self.acquire() as conn:
            return affected(await conn.execute(sql, *args))


async def migrate(conn: Any, migrations: list[Migration], now: float) -> int:
    """Bring the schema to the newest version; return that version.

    One transaction under an advisory lock, so replicas starting together
    apply each migration once and a crash mid-way leaves the previous version.
    A newer version is used as it is when every migration past this code's is additive
    (a rolling upgrade's older replicas keep serving), and refused (``SchemaTooNew``)
    when one is breaking.
    """
    latest = migrations[-1].version if migrations else 0
    async with conn.transaction(isolation="read_committed"):
        await conn.execute(MIGRATION_LOCK)
        await conn.execute(SCHEMA_MIGRATIONS)
        await conn.execute(SCHEMA_BREAKING)
        current = int(
            await conn.fetchval("SELECT coalesce(max(version), 0) FROM schema_migrations")
        )
        if current > latest:
            if breaking := await conn.fetch(NEWER_BREAKING, latest):
                first = breaking[0]
                raise SchemaTooNew(
                    f"database schema version {current} is newer than this webhook-relay "
                    f"knows ({latest}), and migration {first['version']} ({first['name']}) "
                    "changed it in a way this release cannot use: upgrade this replica"
                )
            log.warning("schema_newer_compatible", database=current, known=latest)
            return latest
        for migration in migrations:
            if migration.version > current:
                await conn.execute(migration.sql)  # no arguments: the whole script at once
                await conn.execute(
                    "INSERT INTO schema_migrations (version, name, applied_at, breaking)"
                    " VALUES ($1, $2, $3, $4)",
                    migration.version,
                    migration.name,
                    now,
                    migration.breaking,
                )
    return latest
