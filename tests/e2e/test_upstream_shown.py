"""An upstream URL with a secret in its query (``?api_key=...``), against the
daemon: the key goes to the backend and nowhere else a person or a scraper reads
(the log, /metrics, the status, the events API, the console); the operator still
names the upstream as shown to pause it."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

import aiohttp

from .support import HOST, free_port, post, wait_for

SECRET = "sk_live_QUERYSECRET_4f9a2c"


async def test_a_secret_in_an_upstream_query_is_shown_nowhere(relays: Any) -> None:
    upstream = f"http://{HOST}:{free_port()}/q?api_key={SECRET}&region=eu"
    shown = f"http://{HOST}:{upstream.split(':')[2].split('/')[0]}/q?api_key=[redacted]&region=[redacted]"
    route = {"name": "q", "path": "/q", "upstream": upstream, "retry": {"initial": "1h"}}
    relay = relays([route])
    await relay.start()
    pages = {}
    async with aiohttp.ClientSession() as session:
        assert (await post(session, relay.url("/q"), "k1"))[0] == 202
        await wait_for(lambda: bool(relay.logged("delivery_retry")), 10, "a failed attempt")
        for path in (
            "/metrics",
            "/api/v1/status",
            "/api/v1/events",
            "/api/v1/events/1",
            "/ui/",
            "/ui/events/1",
        ):
            async with session.get(relay.admin_url(path)) as resp:
                assert resp.status == 200, path
                pages[path] = await resp.text()
        async with session.get(relay.admin_url("/api/v1/status")) as resp:
            status = await resp.json()
        assert status["routes"][0]["upstreams"] == [shown]
        # Paused by the name it is shown with.
        async with session.post(
            relay.admin_url(f"/api/v1/routes/q/pause?upstream={quote(shown)}"), json={}
        ) as resp:
            assert resp.status == 200, await resp.text()
            assert (await resp.json())["upstream"] == shown
    for path, text in pages.items():
        assert SECRET not in text, path
    assert "api_key=[redacted]" in pages["/metrics"]
    (retry,) = relay.logged("delivery_retry")
    assert retry["upstream"] == shown
    assert SECRET not in relay.stderr()
