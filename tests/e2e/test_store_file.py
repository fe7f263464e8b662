"""The SQLite file under a running daemon: private whatever the umask, and a file
deleted or replaced under it is noticed before one more webhook is acked into
it; the rescued copy, put back, holds what was acked."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from .support import HOST, Relay, free_port, post, wait_for


@contextlib.contextmanager
def umask(mask: int) -> Iterator[None]:
    """The daemon inherits the umask it is forked with."""
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def pending_route() -> dict[str, Any]:
    """A queue route whose backend never answers: its events stay in the store."""
    return {
        "name": "q",
        "path": "/q",
        "upstream": f"http://{HOST}:{free_port()}/q",
        "retry": {"initial": "1h", "max": "1h"},
    }


def keys_in(db: Path) -> set[str]:
    with contextlib.closing(sqlite3.connect(db)) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM events")}


async def test_store_files_are_private_whatever_the_umask(relays: Any, tmp_path: Path) -> None:
    data = tmp_path / "data"
    relay = relays([pending_route()], storage={"url": f"sqlite:///{data}/relay.db"})
    with umask(0):  # the worst a shell can hand it
        await relay.start()
    async with aiohttp.ClientSession() as session:
        assert (await post(session, relay.url("/q"), "k1"))[0] == 202
    assert mode(data) == 0o700
    for name in ("relay.db", "relay.db-wal", "relay.db-shm", "relay.db.lock"):
        assert mode(data / name) == 0o600, name
    assert not relay.logged("store_file_not_private")


async def test_an_existing_open_file_is_named_at_start(relays: Any) -> None:
    relay = relays([pending_route()])
    relay.db.touch()
    relay.db.chmod(0o644)
    await relay.start()
    (line,) = relay.logged("store_file_not_private")
    assert str(relay.db) in line["detail"] and "0644" in line["detail"]
    assert mode(relay.db) == 0o644  # left as the operator has it


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_lost_store_file_stops_the_acks_and_is_rescued(
    relays: Any, tmp_path: Path, how: str
) -> None:
    relay: Relay = relays([pending_route()])
    await relay.start()
    async with aiohttp.ClientSession() as session:
        for key in ("k1", "k2"):
            assert (await post(session, relay.url("/q"), key))[0] == 202
        if how == "deleted":
            for suffix in ("", "-wal", "-shm"):
                relay.db.with_name(relay.db.name + suffix).unlink()
        else:
            other = tmp_path / "other.db"
            with contextlib.closing(sqlite3.connect(other)) as conn:
                conn.execute("CREATE TABLE t (x)")
            put_there = other.stat().st_ino
            other.replace(relay.db)

        status, headers, body = await post(session, relay.url("/q"), "k3")
        assert status == 503, body
        assert int(headers["Retry-After"]) > 0
        async with session.get(relay.admin_url("/readyz")) as resp:
            assert resp.status == 503
        async with session.get(relay.admin_url("/metrics")) as resp:
            assert "relay_store_file_lost 1.0" in await resp.text()
    (lost,) = relay.logged("store_file_lost")
    assert lost["level"] == "error"
    (rescued,) = relay.logged("store_rescued")
    copy = Path(rescued["copy"])
    assert copy.parent == relay.db.parent and mode(copy) == 0o600
    assert keys_in(copy) == {"k1", "k2"}
    if how == "replaced":  # what the operator put there is left alone
        assert relay.db.stat().st_ino == put_there
    assert await relay.stop() == 0

    # The README's recovery: stopped, the rescued copy in place (and no -wal or
    # -shm of the lost file beside it), then start.
    for suffix in ("-wal", "-shm"):
        relay.db.with_name(relay.db.name + suffix).unlink(missing_ok=True)
    os.replace(copy, relay.db)
    await relay.start()
    async with aiohttp.ClientSession() as session:
        listed = await wait_for_events(session, relay, 2)
    assert {e["key"] for e in listed} == {"k1", "k2"}


async def wait_for_events(
    session: aiohttp.ClientSession, relay: Relay, n: int
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []

    async def listed() -> bool:
        nonlocal found
        async with session.get(relay.admin_url("/api/v1/events")) as resp:
            found = (await resp.json())["events"]
        return len(found) >= n

    await wait_for(listed, 10, f"{n} events listed")
    return found
