"""The store RPC on real Unix sockets, in front of a real SQLite store.

The whole store contract also runs through it: the "remote" backend in
tests/conftest.py. These tests cover what is the protocol's own.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import stat
import sys
import tempfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import structlog
import uvloop

from relay.errors import SchemaTooNew, StoreError, StoreUnavailable
from relay.store.base import EventFilter, Ingested
from relay.store.remote import RemoteStore
from relay.store.remote.server import STORE_CALLS, StoreServer, peer_uid
from relay.store.sqlite import SQLiteStore
from tests.integration.test_store import event, lease_one

Extra = Callable[..., Awaitable[Any]]


class Owner:
    """A SQLite store served on a socket, and the clients connected to it."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = SQLiteStore(tmp_path / "relay.db")
        self.path = tmp_path / "store.sock"
        self.server: StoreServer | None = None
        self.clients: list[RemoteStore] = []
        self.calls: list[tuple[str, tuple[Any, ...], Any]] = []

    async def serve(self, extras: Mapping[str, Extra] | None = None) -> StoreServer:
        await self.store.open()
        self.server = StoreServer(
            self.store,
            self.path,
            after=lambda name, args, result: self.calls.append((name, args, result)),
            extras=extras,
        )
        await self.server.start()
        return self.server

    async def client(self, **kw: Any) -> RemoteStore:
        client = RemoteStore(self.path, **kw)
        await client.open()
        self.clients.append(client)
        return client

    async def close(self) -> None:
        for client in self.clients:
            await client.close()
        if self.server is not None:
            await self.server.close()
        await self.store.close()


@pytest.fixture
async def owner(tmp_path: Path) -> AsyncIterator[Owner]:
    o = Owner(tmp_path)
    yield o
    await o.close()


async def test_calls_round_trip_and_after_sees_each(owner: Owner) -> None:
    await owner.serve()
    client = await owner.client()
    r = await client.ingest(event("k1"))
    assert r.first
    lease = await lease_one(client)
    assert lease.body == event("k1").body and lease.headers == event("k1").headers
    assert await client.lease_due("orders", lease.upstream, 5, 30, hold_dead=True) == []
    assert await client.next_due_at("orders", lease.upstream) is None  # the one is leased
    info = await owner.store.get_event(r.event_id)
    assert info is not None and info.deliveries[0].state == "in_flight"
    names = [name for name, _, _ in owner.calls]
    assert names == ["ingest", "lease_due", "lease_due", "next_due_at"]
    assert owner.calls[0] == ("ingest", (event("k1"),), r)


async def test_store_errors_keep_their_type_and_message(owner: Owner) -> None:
    async def fail(kind: str) -> None:
        errors: dict[str, Exception] = {
            "value": ValueError("limit must be positive"),
            "schema": SchemaTooNew("written by version 9"),
            "unavailable": StoreUnavailable("disk full"),
        }
        raise errors[kind]

    await owner.serve({"fail": fail})
    client = await owner.client()
    with pytest.raises(ValueError, match=r"^limit must be positive$"):
        await client.call("fail", "value")
    with pytest.raises(SchemaTooNew, match=r"^written by version 9$"):
        await client.call("fail", "schema")
    with pytest.raises(StoreUnavailable, match=r"^disk full$"):
        await client.call("fail", "unavailable")
    # One raised by the real store: it is closed under the server.
    await owner.store.close()
    with pytest.raises(StoreUnavailable, match=r"^the store is not open$"):
        await client.ingest(event("k1"))
    assert not owner.calls  # after() runs for successful calls only


async def test_other_errors_are_logged_and_become_store_error(owner: Owner) -> None:
    async def bug() -> None:
        raise KeyError("oops")

    await owner.serve({"bug": bug})
    client = await owner.client()
    with (
        structlog.testing.capture_logs() as logs,
        pytest.raises(StoreError, match="the store owner failed in bug: KeyError") as info,
    ):
        await client.call("bug")
    assert type(info.value) is StoreError
    assert [e["event"] for e in logs] == ["store_rpc_call_failed"]
    assert logs[0]["call"] == "bug"
    # The connection survives a failed call.
    assert (await client.ingest(event("k1"))).first


async def test_only_store_methods_and_extras_are_callable(owner: Owner) -> None:
    async def double(n: int) -> int:
        return 2 * n

    await owner.serve({"double": double})
    client = await owner.client()
    assert await client.call("double", 21) == 42
    assert ("double", (21,), 42) in owner.calls
    for name in ("open", "close", "nope", "_tx", "__init__", "_commit_batch", "path"):
        with pytest.raises(StoreError, match="no such store call"):
            await client.call(name)
    # "close" was refused: the owner's store is still open.
    assert await owner.store.ping()
    assert await client.ping()
    assert "open" not in STORE_CALLS and "close" not in STORE_CALLS
    assert {"ingest", "lease_due", "finish_attempt", "claim_sync", "next_due_at"} <= STORE_CALLS
    # Inspection and maintenance stay with the owner: a worker cannot reach them.
    for name in ("backlog", "list_events", "requeue", "purge", "recover", "purge_expired"):
        assert name not in STORE_CALLS
        with pytest.raises(StoreError, match="no such store call"):
            await client.call(name)


async def test_an_extra_replaces_a_store_method_of_its_name(owner: Owner) -> None:
    async def next_due_at(_route: str, _upstream: str) -> float:
        return -1.0  # e.g. the owner answers from what it keeps in memory

    await owner.serve({"next_due_at": next_due_at})
    client = await owner.client()
    assert await client.next_due_at("orders", "http://u") == -1.0


async def test_server_close_fails_pending_and_later_calls_and_resolves_lost(
    owner: Owner,
) -> None:
    started, release = asyncio.Event(), asyncio.Event()

    async def hang() -> str:
        started.set()
        await release.wait()
        return "late"

    server = await owner.serve({"hang": hang})
    client = await owner.client()
    pending = asyncio.ensure_future(client.call("hang"))
    await started.wait()
    assert not client.lost.done()
    closing = asyncio.ensure_future(server.close())
    with pytest.raises(StoreUnavailable, match="lost"):
        await pending
    await client.lost
    with pytest.raises(StoreUnavailable):
        await client.ingest(event("k1"))
    assert not await client.ping()
    # close() waits for the calls still running on the owner.
    assert not closing.done()
    release.set()
    await closing
    assert server.clients == 0
    assert not owner.path.exists()


async def test_client_close_finishes_calls_in_flight_and_leaves_the_store_open(
    owner: Owner,
) -> None:
    await owner.serve()
    first, second = await owner.client(), await owner.client()
    tasks = [asyncio.ensure_future(first.ingest(event(f"k{i}"))) for i in range(20)]
    await asyncio.sleep(0)  # every call is queued, none answered
    await first.close()
    assert all(t.result().first for t in tasks)
    await first.lost
    with pytest.raises(StoreUnavailable, match="not open"):
        await first.ingest(event("late"))
    assert await owner.store.ping()
    assert len(await owner.store.list_events(EventFilter(), limit=50)) == 20
    assert await second.ping()
    assert owner.server is not None and owner.server.clients == 1


async def test_push_reaches_every_client(owner: Owner) -> None:
    server = await owner.serve()
    loop = asyncio.get_running_loop()
    got: list[asyncio.Future[tuple[str, Any]]] = [loop.create_future() for _ in range(2)]

    def handler(future: asyncio.Future[tuple[str, Any]]) -> Callable[[str, Any], None]:
        return lambda name, arg: future.set_result((name, arg))

    for future in got:
        await owner.client(on_push=handler(future))
    assert server.clients == 2
    server.push("wake", "orders")
    assert await asyncio.gather(*got) == [("wake", "orders"), ("wake", "orders")]


async def test_a_failing_push_handler_does_not_break_the_connection(owner: Owner) -> None:
    server = await owner.serve()
    seen: list[str] = []

    def handler(_name: str, arg: Any) -> None:
        seen.append(arg)
        raise RuntimeError("handler bug")

    client = await owner.client(on_push=handler)
    server.push("wake", "a")
    assert await client.ping()  # answered after the push: it was handled first
    assert seen == ["a"]


async def test_concurrent_ingests_from_many_clients_share_commits(owner: Owner) -> None:
    await owner.serve()
    clients = [await owner.client() for _ in range(3)]
    results = await asyncio.gather(
        *(c.ingest(event(f"k{i}-{n}")) for n, c in enumerate(clients) for i in range(100))
    )
    assert all(isinstance(r, Ingested) and r.first for r in results)
    assert len({r.event_id for r in results}) == 300
    stats = owner.store.stats
    assert stats.rows == 300
    assert stats.batches < 300 and stats.last_batch_size >= 1
    assert stats.rows / stats.batches > 1


async def test_big_payloads_cross_in_pieces(owner: Owner) -> None:
    await owner.serve()
    client = await owner.client()
    body = os.urandom(8 << 20)  # many socket reads per frame, both ways
    r = await client.ingest(event("big", body=body))
    lease = await lease_one(client)
    assert lease.event_id == r.event_id and lease.body == body


async def test_unpicklable_values_fail_only_their_own_call(owner: Owner) -> None:
    async def echo(value: Any) -> Any:
        return value

    async def bad_result() -> Any:
        return lambda: None

    await owner.serve({"echo": echo, "bad_result": bad_result})
    client = await owner.client()
    # Sent in the same frame as good calls.
    answers: tuple[Any, ...] = await asyncio.gather(
        client.call("echo", 1),
        client.call("echo", lambda: None),
        client.call("echo", 3),
        return_exceptions=True,
    )
    good, bad, also_good = answers
    assert (good, also_good) == (1, 3)
    assert isinstance(bad, StoreError) and "cannot send echo" in str(bad)
    with pytest.raises(StoreError, match="could not send the answer"):
        await client.call("bad_result")
    assert await client.call("echo", "still fine") == "still fine"


async def test_a_corrupt_frame_drops_only_that_connection(owner: Owner) -> None:
    await owner.serve()
    client = await owner.client()
    reader, writer = await asyncio.open_unix_connection(owner.path)
    writer.write(b"\x00\x00\x00\x05junk!")
    assert await reader.read() == b""  # the owner hung up on it
    writer.close()
    assert await client.ping()


async def test_open_fails_clearly_without_an_owner(tmp_path: Path) -> None:
    client = RemoteStore(tmp_path / "none.sock")
    with pytest.raises(StoreUnavailable, match=r"cannot reach the store owner at .*none.sock"):
        await client.open()
    assert not await client.ping()
    with pytest.raises(StoreUnavailable, match="not open"):
        await client.ingest(event("k1"))
    await client.close()  # harmless


async def test_socket_is_private_and_a_live_one_is_not_taken_over(owner: Owner) -> None:
    await owner.serve()
    assert stat.S_IMODE(os.stat(owner.path).st_mode) == 0o600
    second = StoreServer(owner.store, owner.path)
    with pytest.raises(StoreUnavailable, match="another store owner"):
        await second.start()
    assert await (await owner.client()).ping()


async def test_a_stale_socket_file_is_replaced(owner: Owner) -> None:
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(owner.path))  # bound, never listening: a crashed owner's leftover
    dead.close()
    await owner.serve()
    assert await (await owner.client()).ping()


def test_peer_uid_is_the_connecting_process_uid() -> None:
    a, b = socket.socketpair(socket.AF_UNIX)
    with a, b:
        assert peer_uid(a) == os.geteuid()


async def test_a_client_the_server_refuses_gets_a_clear_error(owner: Owner) -> None:
    server = await owner.serve()
    server._uid = os.geteuid() + 1  # as if we were another user
    with pytest.raises(StoreUnavailable, match="did not accept the connection"):
        await owner.client()
    assert server.clients == 0


# A raw client as another user: the hello frame, then whatever comes back.
_OTHER_USER = """
import os, pickle, socket, struct, sys
os.setgid(65534); os.setuid(65534)
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
payload = pickle.dumps([(1, "__hello__", (), None)])
try:
    s.sendall(struct.pack("!I", len(payload)) + payload)
    data = s.recv(1 << 16)
except (BrokenPipeError, ConnectionResetError):
    data = b""
print("answered" if data else "refused")
"""


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """Outside pytest's 0700 tmp dirs: a directory other users may pass through."""
    workdir = Path(tempfile.mkdtemp(prefix="rpc-"))
    workdir.chmod(0o711)
    yield workdir
    shutil.rmtree(workdir)


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to connect as another user")
async def test_a_peer_running_as_another_user_is_refused(open_dir: Path) -> None:
    owner = Owner(open_dir)
    try:
        server = await owner.serve()
        # A socket open to all: only the uid check stands between the other user and the store.
        os.chmod(owner.path, 0o666)
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", _OTHER_USER, str(owner.path), stdout=asyncio.subprocess.PIPE
        )
        out, _ = await proc.communicate()
        assert out.decode().strip() == "refused"
        assert server.clients == 0
        # The same check lets our own user in.
        assert await (await owner.client()).ping()
    finally:
        await owner.close()


def test_works_on_uvloop(tmp_path: Path) -> None:
    async def scenario() -> tuple[int, list[Any]]:
        owner = Owner(tmp_path)
        pushed: list[Any] = []
        try:
            server = await owner.serve()
            client = await owner.client(on_push=lambda _name, arg: pushed.append(arg))
            results = await asyncio.gather(*(client.ingest(event(f"k{i}")) for i in range(50)))
            server.push("wake", "orders")
            assert await client.ping()
            return sum(r.first for r in results), pushed
        finally:
            await owner.close()

    assert uvloop.run(scenario()) == (50, ["orders"])
