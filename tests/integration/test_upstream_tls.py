"""Upstreams behind auth and private TLS, with real certificates (trustme) and a real
aiohttp backend that serves TLS and requires a client certificate: what arrives,
what is refused and why, and what an operator sees (status, gauges, logs)."""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import trustme
from aiohttp import web
from aiohttp.test_utils import TestClient

from relay.runtime import RELAY
from relay.serve import OWN_STORE
from tests.integration.conftest import RelayFactory, eventually

Client = TestClient[web.Request, web.Application]


@dataclass
class TLSBackend:
    """An HTTPS backend on 127.0.0.1 that verifies client certificates against ``ca``."""

    ca: trustme.CA
    port: int = 0
    seen: list[dict[str, str]] = field(default_factory=list)

    def url(self, path: str = "/hook") -> str:
        return f"https://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.Response:
        await request.read()
        self.seen.append(dict(request.headers))
        return web.json_response({"ok": True})


@dataclass
class Files:
    """PEM files as an operator would have them: the private CA, the relay's client
    certificate and key, and a CA nobody trusts."""

    ca: Path
    cert: Path
    key: Path
    other_ca: Path
    other_cert: Path


@pytest.fixture
def pki(tmp_path: Path) -> tuple[trustme.CA, Files]:
    ca, other = trustme.CA(), trustme.CA()
    client = ca.issue_cert("relay.internal")
    stranger = other.issue_cert("relay.internal")
    files = Files(
        tmp_path / "ca.pem",
        tmp_path / "client.pem",
        tmp_path / "client.key",
        tmp_path / "other-ca.pem",
        tmp_path / "other-client.pem",
    )
    ca.cert_pem.write_to_path(str(files.ca))
    client.cert_chain_pems[0].write_to_path(str(files.cert))
    client.private_key_pem.write_to_path(str(files.key))
    other.cert_pem.write_to_path(str(files.other_ca))
    stranger.private_key_and_cert_chain_pem.write_to_path(str(files.other_cert))
    return ca, files


@pytest.fixture
async def backend(pki: tuple[trustme.CA, Files]) -> AsyncIterator[TLSBackend]:
    ca, _ = pki
    b = TLSBackend(ca)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", "backend.internal").configure_cert(context)
    ca.configure_trust(context)
    context.verify_mode = ssl.CERT_REQUIRED
    app = web.Application()
    app.router.add_post("/{tail:.*}", b.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=context)
    await site.start()
    assert site._server is not None
    b.port = site._server.sockets[0].getsockname()[1]  # type: ignore[attr-defined]
    yield b
    await runner.cleanup()


def client_tls(files: Files, ca: Path | None = None, cert: Path | None = None) -> dict[str, str]:
    """An upstream's tls: trusting ``ca`` (the private CA by default) and presenting
    ``cert`` (the relay's certificate; its key is in the same file unless it is that one)."""
    cert = cert or files.cert
    out = {"ca_file": str(ca or files.ca), "cert_file": str(cert)}
    if cert == files.cert:
        out["key_file"] = str(files.key)
    return out


def tls_route(backend: TLSBackend, **upstream: Any) -> dict[str, Any]:
    return {
        "name": "erp",
        "path": "/hooks/erp",
        "upstream": {"url": backend.url("/erp"), **upstream},
        "timeout": {"total": "5s", "connect": "2s"},
        "breaker": {"failures": 2, "probe_interval": "30s"},
    }


async def post(client: Client, key: str) -> int:
    resp = await client.post("/hooks/erp", data=b'{"n": 1}', headers={"Idempotency-Key": key})
    assert resp.status == 202, await resp.text()
    return int((await resp.json())["event_id"])


async def settled(client: Client, event_id: int, state: str) -> Any:
    store = client.app[OWN_STORE]
    found: list[Any] = []

    async def reached() -> bool:
        info = await store.get_event(event_id)
        found[:] = [] if info is None else list(info.deliveries)
        return bool(found) and found[0].state == state and found[0].attempts > 0

    await eventually(reached, f"event {event_id} {state}")
    return found[0]


def gauge(client: Client, name: str, **labels: str) -> float | None:
    return client.app[RELAY].metrics.registry.get_sample_value(name, labels)


async def test_the_right_ca_certificate_and_auth_arrive_once(
    make_relay: RelayFactory, backend: TLSBackend, pki: tuple[trustme.CA, Files]
) -> None:
    _, files = pki
    route = tls_route(
        backend,
        name="erp-main",
        headers={"X-Api-Key": {"value_env": "ERP_KEY"}},
        basic_auth={"user": "relay", "password_file": str(files.ca.parent / "pw")},
        tls=client_tls(files),
    )
    (files.ca.parent / "pw").write_text("s3cret pass\n")
    client = await make_relay(route, env={"ERP_KEY": "k-123"})
    event_id = await post(client, "evt-1")
    delivery = await settled(client, event_id, "delivered")
    assert (delivery.attempts, delivery.last_status) == (1, 200)
    assert len(backend.seen) == 1
    got = backend.seen[0]
    assert got["X-Api-Key"] == "k-123"
    assert got["Authorization"] == "Basic " + base64.b64encode(b"relay:s3cret pass").decode()
    assert got["Idempotency-Key"] == "evt-1"
    # A duplicate is absorbed as ever.
    assert await post(client, "evt-1") == event_id
    # The certificates' expiry is a gauge, in the future (trustme's are valid for years).
    shown = backend.url("/erp")
    for file in ("ca", "cert"):
        at = gauge(
            client,
            "relay_upstream_certificate_expiry_timestamp_seconds",
            route="erp",
            upstream=shown,
            file=file,
        )
        assert at is not None and at > time.time()
    # The secrets are in no header stored with the event.
    stored = await client.app[OWN_STORE].get_event(event_id)
    assert stored is not None
    assert not any("k-123" in v or "Basic" in v for _, v in stored.headers)


async def test_a_sender_cannot_override_the_upstreams_authorization(
    make_relay: RelayFactory, backend: TLSBackend, pki: tuple[trustme.CA, Files]
) -> None:
    _, files = pki
    route = tls_route(
        backend,
        bearer_env="ERP_TOKEN",
        tls=client_tls(files),
    )
    client = await make_relay(route, env={"ERP_TOKEN": "tok-9"})
    resp = await client.post(
        "/hooks/erp", data=b"{}", headers={"Idempotency-Key": "e2", "authorization": "Bearer evil"}
    )
    event_id = int((await resp.json())["event_id"])
    await settled(client, event_id, "delivered")
    assert [h["Authorization"] for h in backend.seen] == ["Bearer tok-9"]


@pytest.mark.parametrize(
    ("which", "reason"),
    [
        ("wrong_ca", "tls_verify_failed"),
        ("no_client_cert", "tls_client_cert_refused"),
        ("untrusted_client_cert", "tls_client_cert_refused"),
    ],
)
async def test_tls_failures_are_named_and_open_the_breaker(
    make_relay: RelayFactory,
    make_admin: Any,
    backend: TLSBackend,
    pki: tuple[trustme.CA, Files],
    which: str,
    reason: str,
) -> None:
    _, files = pki
    tls = {
        "wrong_ca": client_tls(files, ca=files.other_ca),
        "no_client_cert": {"ca_file": str(files.ca)},
        "untrusted_client_cert": client_tls(files, cert=files.other_cert),
    }[which]
    client = await make_relay(tls_route(backend, tls=tls))
    admin = await make_admin(client)
    event_id = await post(client, "evt-3")
    delivery = await settled(client, event_id, "pending")
    assert delivery.last_error.startswith(reason + ":"), delivery.last_error
    assert backend.seen == []
    shown = backend.url("/erp")

    async def breaker_open() -> bool:
        resp = await admin.get("/api/v1/status")
        doc = await resp.json()
        return doc["breakers"] == [
            {"route": "erp", "upstream": shown, "state": "open", "reason": reason}
        ]

    await eventually(breaker_open, "the breaker open with the TLS reason in status")
    labels = {"route": "erp", "upstream": shown}
    assert gauge(client, "relay_upstream_tls_failing", **labels, reason=reason) == 1
    other = next(r for r in ("tls_verify_failed", "tls_client_cert_refused") if r != reason)
    assert gauge(client, "relay_upstream_tls_failing", **labels, reason=other) == 0
