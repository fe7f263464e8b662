"""End-to-end fixtures: daemons and backends, killed and reported on in teardown."""

from __future__ import annotations

import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from .support import HOST, Backend, Relay


@pytest.fixture
def start_backend(
    aiohttp_server: Any,
) -> Callable[..., Awaitable[Backend]]:
    """``await start_backend(backend, port=None)``: serve it on 127.0.0.1."""

    async def start(backend: Backend, port: int | None = None) -> Backend:
        backend.server = await aiohttp_server(backend.app(), host=HOST, port=port)
        backend.port = int(backend.server.port)
        return backend

    return start


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item) -> Iterator[None]:
    outcome = yield
    rep = outcome.get_result()  # type: ignore[attr-defined]
    setattr(item, f"rep_{rep.when}", rep)


@pytest.fixture
async def relays(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Any]:
    """``relays(routes, kind=Relay, **top)`` builds a daemon in tmp_path (not started);
    every one is reaped in teardown, and its stderr printed if the test failed."""
    made: list[Relay] = []

    def make(routes: list[dict[str, Any]], kind: type[Relay] = Relay, **top: Any) -> Relay:
        sub = tmp_path / f"relay{len(made)}" if made else tmp_path
        sub.mkdir(exist_ok=True)
        relay = kind(sub, routes, **top)
        made.append(relay)
        return relay

    yield make
    for relay in made:
        relay.reap()
    rep = getattr(request.node, "rep_call", None)
    if rep is None or rep.failed or hasattr(rep, "wasxfail"):
        for relay in made:
            print(f"\n===== relay stderr ({relay.stderr_path}) =====\n{relay.stderr()}")


@pytest.fixture
async def pg_schema() -> AsyncIterator[tuple[Any, str, str]]:
    import asyncpg  # type: ignore[import-untyped,unused-ignore]

    from tests.conftest import POSTGRES_URL

    try:
        conn = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        if os.environ.get("RELAY_REQUIRE_POSTGRES") == "1":
            raise
        pytest.skip(f"PostgreSQL unreachable: {exc}")
    schema = f"t_{secrets.token_hex(6)}"
    await conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield conn, schema, f"{POSTGRES_URL}?search_path={schema}"
    finally:
        await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        await conn.close()
