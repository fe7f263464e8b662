"""Fixtures shared by every test layer."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from relay.store.base import Store


class FakeClock:
    """A clock tests move by hand, so leases expire without sleeping."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


# A backend factory gets the test's tmp_path and clock and is an async context
# manager giving a function that builds a new, unopened store on one and the
# same database each call (so a test can close it and reopen the same data, or
# open two stores at once: two replicas where the backend allows it).
StoreMaker = Callable[..., Store]


@asynccontextmanager
async def _sqlite(tmp_path: Path, clock: FakeClock) -> AsyncIterator[StoreMaker]:
    from relay.store.sqlite import SQLiteStore

    path = tmp_path / "relay.db"

    def make(**tuning: object) -> Store:
        return SQLiteStore(path, clock=clock, **tuning)  # type: ignore[arg-type]

    yield make


# PostgreSQL: RELAY_TEST_POSTGRES_URL, or a local server with trust auth. When
# none answers the tests skip, unless RELAY_REQUIRE_POSTGRES=1 (CI) says they
# must run. Each test gets a fresh schema, dropped afterwards.
POSTGRES_URL = os.environ.get(
    "RELAY_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
_postgres_down: list[str] = []  # why the server is unreachable, checked once per session


@asynccontextmanager
async def _postgres(_tmp_path: Path, clock: FakeClock) -> AsyncIterator[StoreMaker]:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    from relay.store.postgres import PostgresStore

    conn = None
    if not _postgres_down:
        try:
            conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            _postgres_down.append(f"{type(exc).__name__}: {exc}")
    if conn is None:
        why = f"PostgreSQL unreachable ({_postgres_down[0]}); set RELAY_TEST_POSTGRES_URL"
        if os.environ.get("RELAY_REQUIRE_POSTGRES") == "1":
            pytest.fail(why)
        pytest.skip(why)
    schema = f"t_{secrets.token_hex(6)}"
    try:
        await conn.execute(f"CREATE SCHEMA {schema}")

        def make(**tuning: Any) -> Store:
            settings = {"search_path": schema, **tuning.pop("server_settings", {})}
            tuning = {"max_size": 20, **tuning, "server_settings": settings}
            return PostgresStore(POSTGRES_URL, clock=clock, **tuning)

        yield make
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()


class _RemoteForSuite:
    """The remote backend as the suite sees it: the hot path crosses the socket
    (``RemoteStore``, what a worker has); inspection and maintenance, which a worker
    cannot reach, go to the owner's store, as the owner's admin and housekeeping do."""

    def __init__(self, client: Any, owner: Store) -> None:
        self._client = client
        self._owner = owner

    def __getattr__(self, name: str) -> Any:
        if hasattr(self._client, name):
            return getattr(self._client, name)
        return getattr(self._owner, name)  # e.g. list_events, backlog, stats


@asynccontextmanager
async def _remote(tmp_path: Path, clock: FakeClock) -> AsyncIterator[StoreMaker]:
    """SQLite behind the store RPC: one owner for the test, a new client per call."""
    from relay.store.remote import RemoteStore, StoreServer
    from relay.store.sqlite import SQLiteStore

    owner = SQLiteStore(tmp_path / "relay.db", clock=clock)
    server = StoreServer(owner, tmp_path / "store.sock")

    def make() -> Store:
        client = RemoteStore(server.path, clock=clock)
        return _RemoteForSuite(client, owner)

    await owner.open()
    try:
        await server.start()
        yield make
    finally:
        await server.close()
        await owner.close()


STORE_BACKENDS: dict[str, Callable[[Path, FakeClock], AbstractAsyncContextManager[StoreMaker]]] = {
    "sqlite": _sqlite,
    "postgres": _postgres,
    "remote": _remote,
}


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [])
        for name in sorted(STORE_BACKENDS)
    ]
)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture(
    params=[
        pytest.param(name, marks=[pytest.mark.postgres] if name == "postgres" else [])
        for name in sorted(STORE_BACKENDS)
        if name != "remote"
    ]
)
def local_backend(request: pytest.FixtureRequest) -> str:
    """The backends that own their database (tuning applies to them, not to a client)."""
    return str(request.param)


@pytest.fixture
async def make_local_store(
    local_backend: str, tmp_path: Path, clock: FakeClock
) -> AsyncIterator[StoreMaker]:
    async with STORE_BACKENDS[local_backend](tmp_path, clock) as make:
        yield make


@pytest.fixture
async def make_store(backend: str, tmp_path: Path, clock: FakeClock) -> AsyncIterator[StoreMaker]:
    async with STORE_BACKENDS[backend](tmp_path, clock) as make:
        yield make


@pytest.fixture
async def store(make_store: StoreMaker) -> AsyncIterator[Store]:
    store = make_store()
    await store.open()
    yield store
    await store.close()
