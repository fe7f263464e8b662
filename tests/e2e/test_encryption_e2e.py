"""Encryption at rest with the daemon as a real process: a store sealed with one key,
rotated to another while senders keep sending (``webhook-relay rekey`` run as a
real CLI process), the old key then removed, and a start without the key a store
needs refused with that key's id. Nothing acked is lost on the way."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from relay.store.sealing import key_id

from .support import Backend, deliveries_by_state, post, post_many, queue_route, wait_for


def write_key(path: Path) -> bytes:
    key = os.urandom(32)
    path.write_text(base64.b64encode(key).decode() + "\n")
    path.chmod(0o600)
    return key


def sealed(relay: Any, current: str, old: list[str] | None = None) -> None:
    doc = relay.config()
    doc["storage"]["encryption"] = {"key_file": current, **({"old_key_files": old} if old else {})}
    relay.rewrite(doc)


def file_holds(db: Path, needle: bytes) -> bool:
    """Whether the database's bytes (the file and its WAL) contain ``needle``."""
    return any(needle in p.read_bytes() for p in (db, db.with_name(db.name + "-wal")) if p.exists())


@pytest.mark.parametrize("workers", [0, 2])
async def test_a_rotation_under_load_loses_nothing_and_the_old_key_can_go(
    relays: Any, start_backend: Any, tmp_path: Path, workers: int
) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)], workers=workers)
    a, b = write_key(tmp_path / "a.key"), write_key(tmp_path / "b.key")
    sealed(relay, "a.key")
    await relay.start()
    run = time.time_ns()
    first = [f"secret-{run}-{n}" for n in range(600)]
    async with aiohttp.ClientSession() as s:
        got = await post_many(s, relay.url("/q"), first)
    assert set(got.values()) == {202}
    await wait_for(lambda: deliveries_by_state(relay.db).get("delivered") == 600, 20, "delivery")
    # The bodies are sealed on disk, even in the WAL (the keys stay in clear: dedupe).
    assert file_holds(relay.db, first[0].encode())
    assert not file_holds(relay.db, json.dumps({"key": first[0]}).encode())
    assert await relay.stop() == 0

    # The operator rotates: b is current, a still opens what it sealed.
    sealed(relay, "b.key", ["a.key"])
    await relay.start()
    statuses: list[int] = []
    stop = asyncio.Event()

    async def send() -> None:
        async with aiohttp.ClientSession() as s:
            n = 0
            while not stop.is_set():
                n += 1
                statuses.append((await post(s, relay.url("/q"), f"during-{run}-{n}"))[0])

    sender = asyncio.create_task(send())
    cli = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "relay",
        "rekey",
        "-c",
        str(relay.config_path),
        "--wait",
        "30",
        "--json",
        "--reason",
        "yearly rotation",
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(cli.communicate(), 40)
    stop.set()
    await sender
    assert cli.returncode == 0, err.decode()
    done = json.loads(out)
    assert done["current"] == key_id(b)
    assert done["in_store"] == [key_id(b)]
    assert done["rekey"]["state"] == "done"
    assert done["rekey"]["forgotten_keys"] == [key_id(a)]
    assert done["rekey"]["resealed"] >= 1200  # 600 events and their 600 attempts
    assert statuses and set(statuses) == {202}, "a sender was refused during the rekey"
    total = 600 + len(statuses)
    await wait_for(
        lambda: deliveries_by_state(relay.db).get("delivered") == total, 20, "every delivery"
    )
    assert relay.logged("rekey_done")
    assert await relay.stop() == 0

    # The old key goes: everything opens with b alone.
    sealed(relay, "b.key")
    await relay.start()
    # Ids follow commit order, not sending order: the event is found by its key.
    async with aiohttp.ClientSession() as s:
        async with s.get(relay.admin_url("/api/v1/events"), params={"key": first[0]}) as resp:
            (found,) = (await resp.json())["events"]
        async with s.get(relay.admin_url(f"/api/v1/events/{found['id']}")) as resp:
            shown = await resp.json()
    assert shown["body"]["preview"] == json.dumps({"key": first[0]})
    assert await relay.stop() == 0

    # A start with a alone is refused, and says which key it lacks.
    sealed(relay, "a.key")
    assert await relay.start_expecting_exit() == 1
    refused = relay.logged("startup_failed")[-1]["error"]
    assert key_id(b) in refused and "old_key_files" in refused
    assert deliveries_by_state(relay.db) == {"delivered": total}
