"""Provider URL checks answered by a running relay in every mode (queue, sync, hybrid,
shadow): as the provider expects, verified where the provider signs them, counted,
and never stored or forwarded (checked in the relay's store and at the backend)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient
from slack_sdk.signature import SignatureVerifier

from relay.runtime import RELAY
from relay.serve import OWN_STORE
from relay.store.records import EventFilter
from tests.integration.conftest import Backend, RelayFactory, route

Client = TestClient[web.Request, web.Application]

SECRET = "provider-signing-secret"
ENV = {"SECRET": SECRET, "VERIFY_TOKEN": "meatyhamhock"}
MODES: dict[str, dict[str, Any]] = {
    "queue": {},
    "sync": {"mode": "sync"},
    "hybrid": {"mode": "hybrid"},
    "shadow": {"dedupe": "shadow"},
}


@dataclass(frozen=True)
class Check:
    method: str
    query: str = ""
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)


def slack_check(challenge: str = "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P") -> Check:
    # api.slack.com/events/url_verification, signed as every Slack request is.
    body = json.dumps({"token": "x", "challenge": challenge, "type": "url_verification"}).encode()
    ts = str(int(time.time()))
    signature = SignatureVerifier(SECRET).generate_signature(timestamp=ts, body=body)
    assert signature is not None
    return Check(
        "POST",
        body=body,
        headers={"X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature},
    )


def zoom_check() -> Check:
    # developers.zoom.us/docs/api/webhooks/#validate-your-webhook-endpoint
    body = json.dumps(
        {
            "payload": {"plainToken": "qgg8vlvZRS6UYooatFL8Aw"},
            "event_ts": 1654503849680,
            "event": "endpoint.url_validation",
        }
    ).encode()
    ts = str(int(time.time()))
    digest = hmac.new(SECRET.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    return Check(
        "POST", body=body, headers={"x-zm-request-timestamp": ts, "x-zm-signature": f"v0={digest}"}
    )


GRAPH_TOKEN = (
    "Validation: Testing client application reachability for subscription Request-Id:"
    " 2c3a63fd-5d8a-4b5f-8d43-8ef9dbd0d8a4"
)
# provider: (request, status, content type, body as the provider expects it). The
# signed ones are made when the test runs: their timestamps must be fresh then.
CHECKS: dict[str, tuple[Check | Callable[[], Check], int, str, Any]] = {
    "slack": (
        slack_check,
        200,
        "application/json",
        {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"},
    ),
    "zoom": (
        zoom_check,
        200,
        "application/json",
        {
            "plainToken": "qgg8vlvZRS6UYooatFL8Aw",
            "encryptedToken": hmac.new(
                SECRET.encode(), b"qgg8vlvZRS6UYooatFL8Aw", hashlib.sha256
            ).hexdigest(),
        },
    ),
    # developers.facebook.com/docs/graph-api/webhooks/getting-started#verification-requests
    "meta": (
        Check("GET", "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=meatyhamhock"),
        200,
        "text/plain",
        "1158201444",
    ),
    # learn.microsoft.com/graph/change-notifications-delivery-webhooks#notificationurl-validation
    "msgraph": (
        Check("POST", "validationToken=" + GRAPH_TOKEN.replace(" ", "+").replace(":", "%3a")),
        200,
        "text/plain",
        GRAPH_TOKEN,
    ),
    # developer.x.com/en/docs/x-api/enterprise/account-activity-api (challenge-response check)
    "x": (
        Check("GET", "crc_token=9b4507b3-9040-4669-9ba0-fd0b2ca8c2d4&nonce=MTIzNDU2"),
        200,
        "application/json",
        {
            "response_token": "sha256="
            + base64.b64encode(
                hmac.new(
                    SECRET.encode(), b"9b4507b3-9040-4669-9ba0-fd0b2ca8c2d4", hashlib.sha256
                ).digest()
            ).decode()
        },
    ),
    # dropbox.com/developers/reference/webhooks#documentation (verification request)
    "dropbox": (Check("GET", "challenge=Zm9vYmFy"), 200, "text/plain", "Zm9vYmFy"),
}


def provider_route(upstream: Backend, provider: str, **extra: Any) -> dict[str, Any]:
    settings: dict[str, Any] = {"preset": provider, "verify": {"secret_env": "SECRET"}}
    if provider == "meta":
        settings["handshake"] = {"verify_token_env": "VERIFY_TOKEN"}
    return route(upstream, name=provider, **settings, **extra)


async def send(client: Client, provider: str, check: Check) -> Any:
    path = f"/hooks/{provider}" + (f"?{check.query}" if check.query else "")
    return await client.request(check.method, path, data=check.body, headers=check.headers)


def counted(client: Client, provider: str, outcome: str) -> float | None:
    return client.app[RELAY].metrics.registry.get_sample_value(
        "relay_handshakes_total", {"route": provider, "provider": provider, "outcome": outcome}
    )


async def stored(client: Client) -> int:
    return len(await client.app[OWN_STORE].list_events(EventFilter(), 10))


@pytest.mark.parametrize("mode", sorted(MODES))
@pytest.mark.parametrize("provider", sorted(CHECKS))
async def test_each_check_is_answered_in_every_mode_and_never_kept(
    make_relay: RelayFactory, upstream: Backend, provider: str, mode: str
) -> None:
    client = await make_relay(provider_route(upstream, provider, **MODES[mode]), env=ENV)
    assert counted(client, provider, "answered") == 0  # there from the start
    made, status, content_type, expected = CHECKS[provider]
    check = made() if callable(made) else made
    resp = await send(client, provider, check)
    assert resp.status == status
    assert resp.content_type == content_type
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    answer = await resp.json() if content_type == "application/json" else await resp.text()
    assert answer == expected
    assert counted(client, provider, "answered") == 1
    # Answered before the store: nothing was claimed, kept or sent on.
    assert await stored(client) == 0
    assert upstream.seen == []
    assert client.app[RELAY].metrics.registry.get_sample_value(
        "relay_webhooks_received_total", {"route": provider, "outcome": "accepted"}
    ) in (None, 0)


async def test_a_signed_check_with_a_bad_signature_is_refused(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(
        provider_route(upstream, "slack"), provider_route(upstream, "zoom"), env=ENV
    )
    for provider, check in (("slack", slack_check()), ("zoom", zoom_check())):
        forged = Check(check.method, check.query, check.body.replace(b"Bm2", b"Xx2"), check.headers)
        forged = forged if provider == "slack" else Check("POST", "", check.body, {})
        resp = await send(client, provider, forged)
        assert resp.status == 401
        assert "challenge" not in await resp.text()
        assert counted(client, provider, "refused") == 1
    assert await stored(client) == 0


async def test_meta_with_a_wrong_verify_token_is_403(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(provider_route(upstream, "meta"), env=ENV)
    wrong = Check("GET", "hub.mode=subscribe&hub.challenge=1158201444&hub.verify_token=guess")
    resp = await send(client, "meta", wrong)
    assert resp.status == 403
    assert (await resp.json())["error"] == "verify_token_mismatch"
    assert counted(client, "meta", "refused") == 1
    # A GET that is no check is still a wrong method on a POST route.
    resp = await send(client, "meta", Check("GET", "x=1"))
    assert resp.status == 405
    assert resp.headers["Allow"] == "POST"


async def test_an_echoed_challenge_cannot_become_a_page(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(provider_route(upstream, "dropbox"), env=ENV)
    resp = await send(
        client, "dropbox", Check("GET", "challenge=%3Cscript%3Ealert(1)%3C/script%3E")
    )
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert resp.headers["X-Content-Type-Options"] == "nosniff"
    huge = await send(client, "dropbox", Check("GET", "challenge=" + "a" * 5000))
    assert huge.status == 400
    assert counted(client, "dropbox", "refused") == 1


async def test_a_check_shaped_request_on_a_route_without_one_is_a_webhook(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    client = await make_relay(route(upstream, name="orders"), env=ENV)
    body = json.dumps({"type": "url_verification", "challenge": "c"}).encode()
    resp = await client.post("/hooks/orders?challenge=c&validationToken=v", data=body)
    assert resp.status == 202
    event_id = (await resp.json())["event_id"]
    info = await client.app[OWN_STORE].get_event(event_id)
    assert info is not None and info.key_source == "sha256"
    assert (await client.get("/hooks/orders?challenge=c")).status == 405
