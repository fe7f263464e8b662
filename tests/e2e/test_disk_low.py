"""The disk watermark with the daemon as a real process, on the real filesystem but
never by filling it: ``storage.min_free`` is set a little under the free space of
the test's own directory, and a file the size of that margin (and more) is laid
down beside the store. Ingest then answers 503 ``disk_low`` with ``Retry-After``,
deliveries go on, and webhooks are taken again as soon as the file goes."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import aiohttp

from .support import Backend, deliveries_by_state, post, queue_route, wait_for

MiB = 2**20
MARGIN = 48 * MiB  # min_free sits this far under the free space at the start
HOG = 160 * MiB  # the file that takes the disk below it (and well past the noise)


def free_bytes(where: Path) -> int:
    st = os.statvfs(where)
    return st.f_bavail * st.f_frsize


async def test_below_min_free_ingest_waits_and_deliveries_go_on(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend)])
    doc = relay.config()
    doc["storage"]["min_free"] = free_bytes(tmp_path) - MARGIN
    relay.rewrite(doc)
    await relay.start()
    run = time.time_ns()
    async with aiohttp.ClientSession() as s:
        # Work waiting to be delivered when the disk runs low: held by a pause.
        assert (await s.post(relay.admin_url("/api/v1/routes/q/pause"), json={})).status == 200
        for n in range(3):
            assert (await post(s, relay.url("/q"), f"before-{run}-{n}"))[0] == 202

        hog = tmp_path / "hog"
        with hog.open("wb") as f:
            os.posix_fallocate(f.fileno(), 0, HOG)
        try:
            refused: list[tuple[int, dict[str, str], bytes]] = []

            async def turned_away() -> bool:
                got = await post(s, relay.url("/q"), f"low-{run}-{len(refused)}")
                refused.append(got)
                return got[0] == 503

            await wait_for(turned_away, 10, "ingest to stop below min_free")
            _, headers, body = refused[-1]
            assert b"disk_low" in body and headers["Retry-After"] == "60"
            async with s.get(relay.admin_url("/metrics")) as resp:
                metrics = await resp.text()
            assert "relay_store_disk_low 1.0" in metrics
            assert 'relay_webhooks_rejected_total{reason="disk_low",route="q"}' in metrics
            async with s.get(relay.admin_url("/ui/")) as resp:
                assert "below storage.min_free" in await resp.text()

            # Deliveries (and their finishes) go on while ingest waits.
            assert (await s.post(relay.admin_url("/api/v1/routes/q/resume"), json={})).status == 200
            # (Those taken before the file was noticed, at most half a second, count too.)
            taken_before = 3 + sum(1 for r in refused if r[0] == 202)
            await wait_for(
                lambda: deliveries_by_state(relay.db).get("delivered") == taken_before,
                10,
                "the deliveries",
            )
        finally:
            hog.unlink()

        async def taken() -> bool:
            return (await post(s, relay.url("/q"), f"back-{run}-{time.time_ns()}"))[0] == 202

        await wait_for(taken, 10, "ingest to resume once space returned")
    accepted = [r for r in refused if r[0] == 202]
    # Nothing refused was stored; what was taken before the watermark was.
    await wait_for(
        lambda: deliveries_by_state(relay.db).get("delivered") == 4 + len(accepted),
        10,
        "every accepted webhook delivered",
    )
    assert await relay.stop() == 0
