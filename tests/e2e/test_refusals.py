"""Refusals at the edge, against the daemon: a flood of connections over the cap
is one counted log line, never a traceback per connection."""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Any

import aiohttp

from .support import HOST, free_port, wait_for


async def test_connections_over_the_cap_are_one_counted_line(relays: Any) -> None:
    route = {"name": "q", "path": "/q", "upstream": f"http://{HOST}:{free_port()}/q"}
    relay = relays([route], limits={"max_connections": 3, "header_timeout": "10s"})
    await relay.start()
    idle = [await asyncio.open_connection(HOST, relay.port) for _ in range(3)]
    flood = 50
    for _ in range(flood):
        with contextlib.suppress(OSError):
            reader, writer = await asyncio.open_connection(HOST, relay.port)
            with contextlib.suppress(ConnectionError):
                assert await reader.read() == b""  # dropped
            writer.close()

    async def counted() -> bool:
        async with (
            aiohttp.ClientSession() as session,
            session.get(relay.admin_url("/metrics")) as resp,
        ):
            text = await resp.text()
        m = re.search(
            r'relay_webhooks_rejected_total\{reason="max_connections",route=""\} (\S+)', text
        )
        return m is not None and float(m.group(1)) == flood

    await wait_for(counted, 10, f"{flood} refusals counted")
    for _, writer in idle:
        writer.close()
    assert await relay.stop() == 0
    (line,) = relay.logged("connections_refused")  # within 10 s: one line
    assert line["level"] == "warning" and line["reason"] == "max_connections"
    err = relay.stderr()
    assert "Traceback" not in err and "Task exception" not in err
