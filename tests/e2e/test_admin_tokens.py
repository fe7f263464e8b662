"""Rotating the admin token on a running daemon: SIGHUP makes the new one work
and the old one stop, API and console alike; a restart ends every session."""

from __future__ import annotations

import re
import secrets
import signal
from pathlib import Path
from typing import Any

import aiohttp

from .support import HOST, Relay, free_port, wait_for


def token() -> str:
    return secrets.token_urlsafe(32)


async def sign_in(relay: Relay, secret: str) -> aiohttp.ClientSession:
    """A console session (its cookie in the returned client's jar)."""
    session = aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))
    async with session.get(relay.admin_url("/ui/login")) as resp:
        csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', await resp.text())
    assert csrf is not None
    async with session.post(
        relay.admin_url("/ui/login"),
        data={"csrf": csrf.group(1), "token": secret},
        allow_redirects=False,
    ) as resp:
        assert resp.status == 303, await resp.text()
    return session


async def signed_in(session: aiohttp.ClientSession, relay: Relay) -> bool:
    async with session.get(relay.admin_url("/ui/"), allow_redirects=False) as resp:
        return resp.status == 200


async def api_status(relay: Relay, secret: str) -> int:
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            relay.admin_url("/api/v1/status"), headers={"Authorization": f"Bearer {secret}"}
        ) as resp,
    ):
        return resp.status


async def test_a_rotated_token_takes_over_on_reload_and_sessions_end(
    relays: Any, tmp_path: Path
) -> None:
    old, new = token(), token()
    token_file = tmp_path / "admin.token"
    token_file.write_text(old + "\n")
    route = {"name": "q", "path": "/q", "upstream": f"http://{HOST}:{free_port()}/q"}
    relay = relays(
        [route], admin={"listen": f"{HOST}:{free_port()}", "token_file": str(token_file)}
    )
    relay.admin_port = int(relay.config()["admin"]["listen"].rsplit(":", 1)[1])
    await relay.start()
    console = await sign_in(relay, old)
    try:
        assert await signed_in(console, relay)
        assert await api_status(relay, old) == 200

        token_file.write_text(new + "\n")
        relay.signal(signal.SIGHUP)
        await wait_for(lambda: bool(relay.logged("config_reloaded")), 10, "config_reloaded")
        assert not relay.logged("reload_needs_restart")
        assert await api_status(relay, old) == 401
        assert await api_status(relay, new) == 200
        assert not await signed_in(console, relay)  # opened with the old token: ended
    finally:
        await console.close()

    console = await sign_in(relay, new)
    try:
        assert await signed_in(console, relay)
        assert await relay.stop() == 0
        await relay.start()
        assert not await signed_in(console, relay)  # a restart ends every session
    finally:
        await console.close()
