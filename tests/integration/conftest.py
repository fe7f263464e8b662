"""A real relay app on a real socket in front of a real recording backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from relay.admin import build_admin_app
from relay.app import DISPATCHER, GUARD
from relay.config import Config, from_mapping
from relay.housekeeping import sealer_of
from relay.metrics import Metrics
from relay.runtime import RELAY
from relay.serve import OWN_STORE, single_process_app
from relay.store.sqlite import SQLiteStore
from tests.conftest import FakeClock


@dataclass
class Seen:
    method: str
    path_qs: str
    headers: list[tuple[str, str]]
    body: bytes

    @property
    def key(self) -> str | None:
        return dict((k.lower(), v) for k, v in self.headers).get("idempotency-key")


class HasUrl(Protocol):
    def url(self, path: str = ...) -> str: ...


def route(
    upstream: HasUrl, name: str = "orders", path: str | None = None, **extra: Any
) -> dict[str, Any]:
    """A route mapping to ``upstream``/NAME at ``path`` (``/hooks/NAME`` unless given),
    with short timeouts; ``extra`` adds or replaces settings."""
    return {
        "name": name,
        "path": path or f"/hooks/{name}",
        "upstream": upstream.url(f"/{name}"),
        "timeout": {"total": "2s", "connect": "1s"},
        **extra,
    }


Behaviour = Callable[[web.Request, int], Awaitable[web.StreamResponse]]


async def _ok(_request: web.Request, n: int) -> web.StreamResponse:
    return web.json_response({"ok": True, "n": n})


@dataclass
class Backend:
    """Records every request; ``behaviour`` decides each answer (n counts from 1)."""

    server: TestServer | None = None
    seen: list[Seen] = field(default_factory=list)
    behaviour: Behaviour = _ok
    changed: asyncio.Condition = field(default_factory=asyncio.Condition)

    def url(self, path: str = "/hook") -> str:
        assert self.server is not None
        return str(self.server.make_url(path))

    async def handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        # raw_path: the request target exactly as it arrived, not yarl's decoding of it.
        self.seen.append(
            Seen(request.method, request.raw_path, list(request.headers.items()), body)
        )
        n = len(self.seen)
        async with self.changed:
            self.changed.notify_all()
        return await self.behaviour(request, n)

    async def wait_for(self, count: int, timeout: float = 10.0) -> None:
        """Until the backend has seen ``count`` requests (bounded)."""
        async with asyncio.timeout(timeout), self.changed:
            await self.changed.wait_for(lambda: len(self.seen) >= count)

    def keys(self) -> list[str | None]:
        return [s.key for s in self.seen]


@pytest.fixture
async def upstream() -> AsyncIterator[Backend]:
    b = Backend()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", b.handle)
    b.server = TestServer(app)
    await b.server.start_server()
    yield b
    await b.server.close()


class ShiftClock(FakeClock):
    """Real time plus an offset tests can add to: a running dispatcher sees time pass,
    and a test can still jump past a lease or a Retry-After without sleeping."""

    def __init__(self) -> None:
        super().__init__(0.0)

    def __call__(self) -> float:
        return time.time() + self.now


@pytest.fixture
def now_clock() -> FakeClock:
    return ShiftClock()


RelayFactory = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


@pytest.fixture
async def make_relay(tmp_path: Path, now_clock: FakeClock) -> AsyncIterator[RelayFactory]:
    """Build a relay from route mappings; ``start_dispatcher=False`` leaves delivery to burst()."""
    clients: list[TestClient[web.Request, web.Application]] = []

    async def make(
        *routes: dict[str, Any],
        start_dispatcher: bool = True,
        env: dict[str, str] | None = None,
        tracing: Any = None,
        **top: Any,
    ) -> TestClient[web.Request, web.Application]:
        """``tracing``: a ``relay.tracing.Tracing`` to use (an in-memory exporter's)."""
        doc: dict[str, Any] = {"routes": list(routes), **top}
        config: Config = from_mapping(doc, env=env or {}, base=tmp_path)
        store = SQLiteStore(tmp_path / "relay.db", clock=now_clock, sealer=sealer_of(config))
        app = single_process_app(
            config, store=store, metrics=Metrics(), start_dispatcher=start_dispatcher
        )
        app[RELAY].tracing = tracing
        client: TestClient[web.Request, web.Application] = TestClient(TestServer(app))
        await client.start_server()
        assert client.server.runner is not None and client.server.runner.server is not None
        app[GUARD].install(client.server.runner.server)
        clients.append(client)
        return client

    yield make
    for c in clients:
        await c.close()


def dispatcher_of(client: TestClient[web.Request, web.Application]) -> Any:
    return client.app[DISPATCHER]


Client = TestClient[web.Request, web.Application]
AdminFactory = Callable[[Client], Awaitable[Client]]


@pytest.fixture
async def make_admin() -> AsyncIterator[AdminFactory]:
    """The admin app of a relay built by make_relay, on its own real socket."""
    made: list[Client] = []

    async def make(public: Client) -> Client:
        client: Client = TestClient(
            TestServer(build_admin_app(public.app[RELAY], public.app[OWN_STORE]))
        )
        await client.start_server()
        made.append(client)
        return client

    yield make
    for c in made:
        await c.close()


async def eventually(cond: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> None:
    """Poll an async condition until true, bounded; fail with ``what``."""
    try:
        async with asyncio.timeout(timeout):
            while not await cond():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None
