"""``GET /api/v1/export`` over a real socket: every event as a JSON line, page after
page; secrets redacted unless an operate token asks (and the audit log says so);
filters; a sealed store exported opened."""

from __future__ import annotations

import base64
import json
import os
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.integration.conftest import AdminFactory, Backend, RelayFactory, eventually, route

Client = TestClient[web.Request, web.Application]
VIEWER, OPS = "v" * 40, "o" * 40
AS_VIEWER = {"Authorization": f"Bearer {VIEWER}"}
AS_OPS = {"Authorization": f"Bearer {OPS}"}


async def lines(admin: Client, query: str, headers: dict[str, str]) -> list[dict[str, Any]]:
    resp = await admin.get(f"/api/v1/export?{query}", headers=headers)
    assert resp.status == 200, await resp.text()
    assert resp.headers["Content-Type"].startswith("application/x-ndjson")
    return [json.loads(line) for line in (await resp.read()).splitlines()]


async def test_export_streams_every_event_with_secrets_only_when_asked(
    upstream: Backend, make_relay: RelayFactory, make_admin: AdminFactory, tmp_path: Any
) -> None:
    (tmp_path / "store.key").write_text(base64.b64encode(os.urandom(32)).decode())
    public = await make_relay(
        route(upstream),
        admin={
            "tokens": [
                {"label": "grafana", "role": "read", "token_env": "T_READ"},
                {"label": "oncall", "role": "operate", "token_env": "T_OPS"},
            ]
        },
        storage={"encryption": {"key_file": str(tmp_path / "store.key")}},
        env={"T_READ": VIEWER, "T_OPS": OPS},
    )
    admin = await make_admin(public)
    n = 450  # more than two pages
    for i in range(n):
        resp = await public.post(
            "/hooks/orders",
            data=json.dumps({"n": i}).encode(),
            headers={"Idempotency-Key": f"k{i}", "Authorization": "Bearer sk_live_x"},
        )
        assert resp.status == 202

    async def all_delivered() -> bool:
        doc = await (await admin.get("/api/v1/status", headers=AS_VIEWER)).json()
        return bool(doc["routes"][0]["pending"] == 0 and len(upstream.seen) >= n)

    await eventually(all_delivered, "every delivery")

    plain = await lines(admin, "route=orders", AS_VIEWER)
    assert len(plain) == n and len({e["id"] for e in plain}) == n
    first = next(e for e in plain if e["key"] == "k0")
    assert json.loads(base64.b64decode(first["body"]["base64"])) == {"n": 0}  # opened
    assert ["Authorization", "[redacted]"] in first["headers"]
    assert [a["status"] for a in first["attempts"]] == [200]
    assert "sk_live_x" not in json.dumps(plain)

    refused = await admin.get("/api/v1/export?include_secrets=true", headers=AS_VIEWER)
    assert refused.status == 403 and (await refused.json())["error"] == "role"
    full = await lines(admin, "include_secrets=true&state=delivered", AS_OPS)
    assert len(full) == n
    assert ["Authorization", "Bearer sk_live_x"] in full[0]["headers"]
    entries = (await (await admin.get("/api/v1/audit", headers=AS_OPS)).json())["entries"]
    assert [(e["action"], e["credential"]) for e in entries] == [("export_secrets", "oncall")]

    assert await lines(admin, "state=dead", AS_VIEWER) == []
    assert await lines(admin, "route=nope", AS_VIEWER) == []
    bad = await admin.get("/api/v1/export?limit=5", headers=AS_VIEWER)
    assert bad.status == 400
