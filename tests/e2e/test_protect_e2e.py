"""Protection with the daemon as a process: a pause outlives a restart."""

from __future__ import annotations

from typing import Any

import aiohttp

from .support import Backend, post, queue_route, wait_for


async def test_a_pause_outlives_a_restart(relays: Any, start_backend: Any) -> None:
    backend = await start_backend(Backend())
    relay = relays([queue_route(backend, "q"), queue_route(backend, "c")])
    await relay.start()
    async with aiohttp.ClientSession() as session:
        pause = relay.admin_url("/api/v1/routes/q/pause")
        async with session.post(pause, json={"reason": "backend migration"}) as resp:
            assert resp.status == 200 and (await resp.json())["changed"] == 1
        assert (await post(session, relay.url("/q"), "before"))[0] == 202
    assert await relay.stop() == 0

    await relay.start()
    async with aiohttp.ClientSession() as session:
        async with session.get(relay.admin_url("/api/v1/status")) as resp:
            status = await resp.json()
        assert [(p["route"], p["reason"]) for p in status["pauses"]] == [("q", "backend migration")]
        # Senders are still acked; the other route delivers, the paused one holds.
        assert (await post(session, relay.url("/q"), "after"))[0] == 202
        assert (await post(session, relay.url("/c"), "control"))[0] == 202
        await wait_for(lambda: backend.received["control"] == 1, 10, "the other route delivered")

        async def held() -> bool:
            async with session.get(relay.admin_url("/metrics")) as resp:
                lines = (await resp.text()).splitlines()
            prefix = 'relay_deliveries_held{reason="paused",route="q",'
            return any(line.startswith(prefix) and line.endswith(" 2.0") for line in lines)

        await wait_for(held, 10, "two deliveries held as paused")
        assert backend.received["before"] == 0 and backend.received["after"] == 0

        async with session.post(relay.admin_url("/api/v1/routes/q/resume"), json={}) as resp:
            assert (await resp.json())["changed"] == 1
        await wait_for(
            lambda: backend.received["before"] == backend.received["after"] == 1,
            10,
            "both held events delivered once resumed",
        )
    assert await relay.stop() == 0
    assert backend.repeated() == {}
