"""``webhook-relay backup`` on a running relay, then the README's restore after a
kill -9: the dedupe state in the backup holds (a sender's retry of a key it has is
absorbed), and what was pending in it is pending again; ``webhook-relay export``
of what it holds."""

from __future__ import annotations

import json
import shutil
import stat
import time
from pathlib import Path
from typing import Any

import aiohttp

from .support import Backend, deliveries_by_state, post, post_many, queue_route, run_cli, wait_for


async def test_a_backup_of_a_running_relay_restores_its_dedupe_state(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    backend = await start_backend(Backend())
    down = Backend()  # never started: its events stay pending
    down.port = 9  # discard: nothing listens
    routes = [queue_route(backend), queue_route(down, "later", retry={"initial": "1h"})]
    relay = relays(routes)
    await relay.start()
    run = time.time_ns()
    kept = [f"kept-{run}-{n}" for n in range(200)]
    async with aiohttp.ClientSession() as s:
        assert set((await post_many(s, relay.url("/q"), kept)).values()) == {202}
        assert (await post(s, relay.url("/later"), f"pending-{run}"))[0] == 202
    await wait_for(lambda: deliveries_by_state(relay.db).get("delivered") == 200, 20, "delivery")

    copy = tmp_path / "backups" / "relay.db"
    copy.parent.mkdir()
    code, out = await run_cli("backup", str(copy), "-c", str(relay.config_path))
    assert code == 0, out
    assert "201 events" in out
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    # Never over an existing file.
    code, out = await run_cli("backup", str(copy), "-c", str(relay.config_path))
    assert code == 1 and "File exists" in out

    # More arrives after the backup; then the machine dies.
    async with aiohttp.ClientSession() as s:
        assert (await post(s, relay.url("/q"), f"after-{run}"))[0] == 202
    await relay.kill()

    # The README's restore: the database and its -wal and -shm go, the backup comes in.
    for suffix in ("", "-wal", "-shm"):
        relay.db.with_name(relay.db.name + suffix).unlink(missing_ok=True)
    shutil.copy2(copy, relay.db)
    await relay.start()
    async with aiohttp.ClientSession() as s:
        assert (await post(s, relay.url("/q"), kept[0]))[0] == 202
    await wait_for(
        lambda: any(
            e.get("key") == kept[0] and e.get("outcome") == "duplicate"
            for e in relay.logged("webhook")
        ),
        10,
        "the retry of a backed-up key to be absorbed",
    )
    assert backend.received[kept[0]] == 1
    # What came after the backup is not in it: that is what a backup's age costs.
    assert deliveries_by_state(relay.db) == {"delivered": 200, "pending": 1}

    # The restored history, exported: JSON lines in a new 0600 file.
    exported = tmp_path / "export.jsonl"
    code, out = await run_cli(
        "export", "-o", str(exported), "--route", "q", "-c", str(relay.config_path)
    )
    assert code == 0, out
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    rows = [json.loads(line) for line in exported.read_text().splitlines()]
    assert sorted(r["key"] for r in rows) == sorted(kept)
    assert all(r["state"] == "delivered" and r["attempts"] for r in rows)
    assert await relay.stop() == 0
