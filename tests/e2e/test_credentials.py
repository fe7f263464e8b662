"""A config that names systemd credentials (``*_credential``) starts and uses them:
the database URL, the admin token and a route's signing secret, read from
``$CREDENTIALS_DIRECTORY`` as systemd's LoadCredential= hands them over."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import aiohttp

from .support import Backend, queue_route

SECRET = "gh-credential-secret"


async def test_credentials_for_the_store_the_admin_token_and_a_route_secret(
    relays: Any, start_backend: Any, tmp_path: Path
) -> None:
    creds = tmp_path / "credentials"
    creds.mkdir()
    token = "t" * 48
    (creds / "db-url").write_text(f"sqlite:///{tmp_path / 'from-credential.db'}\n")
    (creds / "admin-token").write_text(token + "\n")
    (creds / "gh-secret").write_text(SECRET)
    backend = await start_backend(Backend())
    route = queue_route(backend, preset="github", verify={"secret_credential": "gh-secret"})
    relay = relays([route])
    doc = relay.config()
    doc["storage"] = {"url_credential": "db-url"}
    doc["admin"]["tokens"] = [
        {"label": "ops", "role": "operate", "token_credential": "admin-token"}
    ]
    relay.rewrite(doc)
    relay.extra_env["CREDENTIALS_DIRECTORY"] = str(creds)
    await relay.start()

    body = json.dumps({"action": "opened"}).encode()
    signature = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    async with aiohttp.ClientSession() as session:
        headers = {"X-Hub-Signature-256": signature, "X-GitHub-Delivery": "d-1"}
        async with session.post(relay.url("/q"), data=body, headers=headers) as resp:
            assert resp.status == 202
        forged = {**headers, "X-Hub-Signature-256": "sha256=" + "0" * 64}
        async with session.post(relay.url("/q"), data=body, headers=forged) as resp:
            assert resp.status == 401
        auth = {"Authorization": f"Bearer {token}"}
        async with session.get(relay.admin_url("/api/v1/events"), headers=auth) as resp:
            assert resp.status == 200
            (event,) = (await resp.json())["events"]
            assert event["key"] == "d-1"
        wrong = {"Authorization": "Bearer " + "x" * 48}
        async with session.get(relay.admin_url("/api/v1/events"), headers=wrong) as resp:
            assert resp.status == 401
    assert (tmp_path / "from-credential.db").is_file()  # the store the credential named
    assert token not in relay.stderr() and SECRET not in relay.stderr()
    assert await relay.stop() == 0
