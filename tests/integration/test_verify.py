"""Signature verification at the edge and re-signing, with the providers' own libraries."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from datetime import UTC
from typing import Any

import pytest
import stripe
from aiohttp import web
from slack_sdk.signature import SignatureVerifier
from standardwebhooks import Webhook

from relay.runtime import RELAY
from relay.serve import OWN_STORE
from tests.integration.conftest import Backend, RelayFactory

STRIPE_SECRET = "whsec_test_relay_0123456789abcdef"
SW_SECRET = "whsec_" + base64.b64encode(b"standard-webhooks-secret-32bytes").decode()
SLACK_SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
GITHUB_SECRET = "It's a Secret to Everybody"


def stripe_header(body: bytes, secret: str, ts: int) -> str:
    sig = stripe.WebhookSignature._compute_signature(f"{ts}.{body.decode()}", secret)
    return f"t={ts},v1={sig}"


def stripe_event(event_id: str) -> bytes:
    return json.dumps({"id": event_id, "object": "event", "type": "invoice.paid"}).encode()


ENV = {
    "STRIPE_SECRET": STRIPE_SECRET,
    "SW_SECRET": SW_SECRET,
    "SLACK_SECRET": SLACK_SECRET,
    "GITHUB_SECRET": GITHUB_SECRET,
}


def routes(upstream: Backend) -> list[dict[str, Any]]:
    return [
        {
            "name": "stripe",
            "path": "/stripe",
            "upstream": upstream.url("/stripe"),
            "preset": "stripe",
            "verify": {"secret_env": "STRIPE_SECRET"},
        },
        {
            "name": "sw",
            "path": "/sw",
            "upstream": upstream.url("/sw"),
            "preset": "standard-webhooks",
            "verify": {"secret_env": "SW_SECRET"},
        },
        {
            "name": "slack",
            "path": "/slack",
            "upstream": upstream.url("/slack"),
            "preset": "slack",
            "verify": {"secret_env": "SLACK_SECRET"},
        },
        {
            "name": "github",
            "path": "/github",
            "upstream": upstream.url("/github"),
            "preset": "github",
            "verify": {"secret_env": "GITHUB_SECRET"},
        },
    ]


async def test_signatures_made_by_provider_libraries_are_accepted(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    client = await make_relay(*routes(upstream), env=ENV, start_dispatcher=False)
    now = int(time.time())
    body = stripe_event("evt_1")
    r = await client.post(
        "/stripe", data=body, headers={"Stripe-Signature": stripe_header(body, STRIPE_SECRET, now)}
    )
    assert r.status == 202

    sw_body = b'{"type":"user.created"}'
    from datetime import datetime

    sw_sig = Webhook(SW_SECRET).sign("msg_1", datetime.fromtimestamp(now, tz=UTC), sw_body.decode())
    r = await client.post(
        "/sw",
        data=sw_body,
        headers={"webhook-id": "msg_1", "webhook-timestamp": str(now), "webhook-signature": sw_sig},
    )
    assert r.status == 202

    slack_body = b'{"event_id":"Ev1","type":"event_callback"}'
    verifier = SignatureVerifier(SLACK_SECRET)
    signature = verifier.generate_signature(timestamp=str(now), body=slack_body)
    assert signature is not None
    r = await client.post(
        "/slack",
        data=slack_body,
        headers={"X-Slack-Request-Timestamp": str(now), "X-Slack-Signature": signature},
    )
    assert r.status == 202

    gh_body = b'{"action":"opened"}'
    gh_sig = "sha256=" + hmac.new(GITHUB_SECRET.encode(), gh_body, hashlib.sha256).hexdigest()
    r = await client.post(
        "/github", data=gh_body, headers={"X-Hub-Signature-256": gh_sig, "X-GitHub-Delivery": "d1"}
    )
    assert r.status == 202


@pytest.mark.parametrize(
    "case",
    ["tampered", "wrong_secret", "stale", "missing"],
)
async def test_bad_signatures_are_401_never_stored_or_forwarded(
    upstream: Backend, make_relay: RelayFactory, case: str
) -> None:
    client = await make_relay(*routes(upstream), env=ENV)
    relay = client.app[RELAY]
    now = int(time.time())
    body = stripe_event("evt_bad")
    header = {
        "tampered": stripe_header(b'{"id": "evt_other"}', STRIPE_SECRET, now),
        "wrong_secret": stripe_header(body, "whsec_wrong", now),
        "stale": stripe_header(body, STRIPE_SECRET, now - 3600),
        "missing": None,
    }[case]
    headers = {"Stripe-Signature": header} if header else {}
    r = await client.post("/stripe", data=body, headers=headers)
    assert r.status == 401
    answer = await r.json()
    assert answer["error"] == "bad_signature"
    assert STRIPE_SECRET not in json.dumps(answer)
    assert await client.app[OWN_STORE].undelivered_counts() == {}
    assert upstream.seen == []
    total = sum(
        s.value
        for m in relay.metrics.registry.collect()
        if m.name == "relay_signature_failures"
        for s in m.samples
        if s.name.endswith("_total")
    )
    assert total == 1


async def test_resigned_delivery_is_accepted_by_stripe_after_the_original_went_stale(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    """The sender signed a minute ago; a backend with a strict 5 s tolerance still accepts."""
    verdicts: list[str] = []

    async def strict_backend(request: web.Request, _n: int) -> web.StreamResponse:
        body = await request.read()
        try:
            stripe.WebhookSignature.verify_header(
                body.decode(), request.headers["Stripe-Signature"], STRIPE_SECRET, 5
            )
        except stripe.SignatureVerificationError as exc:
            verdicts.append(f"rejected: {exc}")
            return web.Response(status=400)
        verdicts.append("accepted")
        return web.Response(status=200)

    upstream.behaviour = strict_backend
    plain, resigned = routes(upstream)[0], {**routes(upstream)[0]}
    plain = {**plain, "name": "plain", "path": "/plain"}
    resigned["resign"] = True
    client = await make_relay(plain, resigned, env=ENV, start_dispatcher=False)
    signed_at = int(time.time()) - 60  # inside the relay's 5 minutes, past the backend's 5 s
    for path, event_id in (("/plain", "evt_plain"), ("/stripe", "evt_resigned")):
        body = stripe_event(event_id)
        r = await client.post(
            path,
            data=body,
            headers={"Stripe-Signature": stripe_header(body, STRIPE_SECRET, signed_at)},
        )
        assert r.status == 202
    from tests.integration.conftest import dispatcher_of

    await dispatcher_of(client).burst()
    assert len(verdicts) == 2
    assert verdicts[0].startswith("rejected")  # as received: too old for the backend
    assert verdicts[1] == "accepted"  # re-signed with a fresh timestamp


async def test_resigned_standard_webhook_verifies_with_the_library(
    upstream: Backend, make_relay: RelayFactory
) -> None:
    verdicts: list[bool] = []

    async def backend(request: web.Request, _n: int) -> web.StreamResponse:
        body = await request.read()
        try:
            Webhook(SW_SECRET).verify(body, dict(request.headers))
            verdicts.append(True)
        except Exception:
            verdicts.append(False)
        return web.Response(status=200)

    upstream.behaviour = backend
    route = {**routes(upstream)[1], "resign": True}
    client = await make_relay(route, env=ENV, start_dispatcher=False)
    from datetime import datetime

    signed_at = int(time.time()) - 200  # within the relay's tolerance, the library allows 300 s
    body = b'{"type":"user.created"}'
    sig = Webhook(SW_SECRET).sign("msg_9", datetime.fromtimestamp(signed_at, tz=UTC), body.decode())
    r = await client.post(
        "/sw",
        data=body,
        headers={
            "webhook-id": "msg_9",
            "webhook-timestamp": str(signed_at),
            "webhook-signature": sig,
        },
    )
    assert r.status == 202
    from tests.integration.conftest import dispatcher_of

    await dispatcher_of(client).burst()
    assert verdicts == [True]
    (seen,) = upstream.seen
    stamp = {k.lower(): v for k, v in seen.headers}["webhook-timestamp"]
    assert int(stamp) >= int(time.time()) - 5  # a fresh timestamp, not the sender's


async def test_secrets_never_reach_logs_or_answers(
    upstream: Backend, make_relay: RelayFactory, capsys: pytest.CaptureFixture[str]
) -> None:
    client = await make_relay(*routes(upstream), env=ENV, start_dispatcher=False)
    body = stripe_event("evt_log")
    for header in ("t=1,v1=00", stripe_header(body, "whsec_wrong", int(time.time())), "garbage"):
        r = await client.post("/stripe", data=body, headers={"Stripe-Signature": header})
        assert r.status == 401
        assert STRIPE_SECRET not in await r.text()
    out = capsys.readouterr()
    for secret in ENV.values():
        assert secret not in out.out + out.err
