"""Each new preset end to end through a running relay: a request signed as the
provider signs it (with its own library where there is one) is accepted, delivered
once and still verifies at the backend with that library; its retry is absorbed; a
tampered copy is 401. Twilio and Square sign the public URL: ``public_url`` gives it."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode

import pytest
import razorpay
import structlog
from aiohttp import web
from aiohttp.test_utils import TestClient
from mailgun.security import SecurityGuard
from paddle_billing.Notifications import Secret, Verifier
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from square.utils.webhooks_helper import verify_signature as square_verify
from twilio.request_validator import RequestValidator

from relay.intake.replies import REPLAYED
from relay.serve import OWN_STORE
from tests.integration.conftest import Backend, RelayFactory, Seen, eventually, route
from tests.tools import required_tool

Client = TestClient[web.Request, web.Application]
SECRET = "provider-secret-0123456789"
PUBLIC = "https://hooks.example.com"
FORM = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Sent:
    body: bytes
    headers: dict[str, str]
    query: str = ""


def _mac(msg: bytes) -> hmac.HMAC:
    return hmac.new(SECRET.encode(), msg, hashlib.sha256)


def razorpay_request(n: str) -> Sent:
    body = json.dumps({"entity": "event", "event": "payment.captured", "n": n}).encode()
    return Sent(body, {"X-Razorpay-Signature": _mac(body).hexdigest(), "X-Razorpay-Event-Id": n})


def twilio_request(n: str) -> Sent:
    params = {"MessageSid": f"SM{n}", "From": "+15005550006", "Body": "hello ☕"}
    url = f"{PUBLIC}/hooks/twilio"
    signature = RequestValidator(SECRET).compute_signature(url, params)
    headers = {"X-Twilio-Signature": signature, "Content-Type": FORM}
    return Sent(urlencode(params).encode(), {**headers, "I-Twilio-Idempotency-Token": f"tok-{n}"})


def paddle_request(n: str) -> Sent:
    body = json.dumps({"event_id": f"evt_{n}", "event_type": "transaction.completed"}).encode()
    ts = int(time.time())
    h1 = PaddleSignature.calculate_hmac(SECRET, f"{ts}:".encode() + body).hexdigest()
    return Sent(body, {"Paddle-Signature": f"ts={ts};h1={h1}"})


def square_request(n: str) -> Sent:
    body = json.dumps({"event_id": f"sq-{n}", "type": "payment.created"}).encode()
    url = f"{PUBLIC}/hooks/square?tenant=7"
    signature = base64.b64encode(_mac(url.encode() + body).digest()).decode()
    return Sent(body, {"x-square-hmacsha256-signature": signature}, "tenant=7")


def mailgun_request(n: str) -> Sent:
    ts, token = str(int(time.time())), f"{n:0>50}"
    signature = _mac((ts + token).encode()).hexdigest()
    doc = {
        "signature": {"timestamp": ts, "token": token, "signature": signature},
        "event-data": {"id": f"mg-{n}", "event": "delivered"},
    }
    return Sent(json.dumps(doc).encode(), {"Content-Type": "application/json"})


def gitlab_request(n: str) -> Sent:
    return Sent(b'{"object_kind":"push"}', {"X-Gitlab-Token": SECRET, "Idempotency-Key": f"gl-{n}"})


def linear_request(n: str) -> Sent:
    body = json.dumps({"type": "Issue", "webhookTimestamp": int(time.time() * 1000)}).encode()
    return Sent(body, {"Linear-Signature": _mac(body).hexdigest(), "Linear-Delivery": f"li-{n}"})


def asyncqueue_request(n: str) -> Sent:
    body = json.dumps({"taskId": f"task-{n}", "queue": "emails"}).encode()
    return Sent(body, {"X-Signature": _mac(body).hexdigest()})


NODE_DIR = Path(__file__).resolve().parents[1] / "node"


def _node() -> str:
    """Node.js with tests/node's packages installed from its lock file (npm ci, once)."""
    node = required_tool("node", "apt-get install nodejs npm", "RELAY_REQUIRE_NODE")
    npm = required_tool("npm", "apt-get install nodejs npm", "RELAY_REQUIRE_NODE")
    if not (NODE_DIR / "node_modules" / "@linear" / "sdk").is_dir():
        done = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=NODE_DIR,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
    return node


def _npm_library_ok(provider: str, seen: Seen) -> bool:
    """The provider's own npm library's verdict on a request the backend received."""
    message = {
        "provider": provider,
        "secret": SECRET,
        "body_b64": base64.b64encode(seen.body).decode(),
        "headers": {k.lower(): v for k, v in seen.headers},
    }
    done = subprocess.run(
        [_node(), "verify.mjs"],
        cwd=NODE_DIR,
        input=json.dumps(message),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    verdict = json.loads(done.stdout)
    assert verdict["ok"], verdict
    return True


def zoom_request(n: str) -> Sent:
    # developers.zoom.us/docs/api/webhooks/#verify-webhook-events
    body = json.dumps({"event": "meeting.started", "event_ts": int(n)}).encode()
    ts = str(int(time.time()))
    digest = _mac(f"v0:{ts}:".encode() + body).hexdigest()
    return Sent(body, {"x-zm-request-timestamp": ts, "x-zm-signature": f"v0={digest}"})


def meta_request(n: str) -> Sent:
    body = json.dumps({"object": "page", "entry": [{"id": n, "time": 1}]}).encode()
    return Sent(body, {"X-Hub-Signature-256": "sha256=" + _mac(body).hexdigest()})


def x_request(n: str) -> Sent:
    body = json.dumps({"for_user_id": n, "tweet_create_events": []}).encode()
    signature = "sha256=" + base64.b64encode(_mac(body).digest()).decode()
    return Sent(body, {"X-Twitter-Webhooks-Signature": signature})


def dropbox_request(n: str) -> Sent:
    body = json.dumps({"list_folder": {"accounts": [n]}, "delta": {"users": [1]}}).encode()
    return Sent(body, {"X-Dropbox-Signature": _mac(body).hexdigest()})


def msgraph_request(n: str) -> Sent:
    notification = {"subscriptionId": n, "clientState": SECRET, "changeType": "created"}
    return Sent(json.dumps({"value": [notification]}).encode(), {})


def _header(seen: Seen, name: str) -> str:
    return dict((k.lower(), v) for k, v in seen.headers)[name.lower()]


def _paddle_ok(seen: Seen) -> bool:
    request = type("R", (), {"headers": {"Paddle-Signature": _header(seen, "Paddle-Signature")}})
    request.body = seen.body  # type: ignore[attr-defined]
    return bool(Verifier().verify(request, Secret(SECRET)))


def _mailgun_ok(seen: Seen) -> bool:
    sig = json.loads(seen.body)["signature"]
    return SecurityGuard.verify_webhook(SECRET, sig["token"], sig["timestamp"], sig["signature"])


# The check a backend behind the relay makes with the provider's library.
BACKEND_CHECKS: dict[str, Callable[[Seen], bool]] = {
    "razorpay": lambda s: bool(
        razorpay.Client(auth=("k", "s")).utility.verify_webhook_signature(
            s.body.decode(), _header(s, "X-Razorpay-Signature"), SECRET
        )
    ),
    "twilio": lambda s: RequestValidator(SECRET).validate(
        f"{PUBLIC}/hooks/twilio",
        dict(parse_qsl(s.body.decode())),
        _header(s, "X-Twilio-Signature"),
    ),
    "paddle": _paddle_ok,
    "square": lambda s: square_verify(
        request_body=s.body.decode(),
        signature_header=_header(s, "x-square-hmacsha256-signature"),
        signature_key=SECRET,
        notification_url=f"{PUBLIC}/hooks/square?tenant=7",
    ),
    "mailgun": _mailgun_ok,
    "gitlab": lambda s: hmac.compare_digest(_header(s, "X-Gitlab-Token"), SECRET),
    # @linear/sdk's LinearWebhookClient exists only on npm (tests/node, its lock file).
    "linear": lambda s: _npm_library_ok("linear", s),
    "asyncqueue": lambda s: hmac.compare_digest(
        _mac(s.body).hexdigest(), _header(s, "X-Signature")
    ),
    # No library of their own: the documented formats, checked as a backend would.
    "zoom": lambda s: (
        _header(s, "x-zm-signature")
        == "v0=" + _mac(f"v0:{_header(s, 'x-zm-request-timestamp')}:".encode() + s.body).hexdigest()
    ),
    "meta": lambda s: _header(s, "X-Hub-Signature-256") == "sha256=" + _mac(s.body).hexdigest(),
    "x": lambda s: (
        _header(s, "X-Twitter-Webhooks-Signature")
        == "sha256=" + base64.b64encode(_mac(s.body).digest()).decode()
    ),
    "dropbox": lambda s: _header(s, "X-Dropbox-Signature") == _mac(s.body).hexdigest(),
    "msgraph": lambda s: json.loads(s.body)["value"][0]["clientState"] == SECRET,
}
REQUESTS: dict[str, Callable[[str], Sent]] = {
    "razorpay": razorpay_request,
    "twilio": twilio_request,
    "paddle": paddle_request,
    "square": square_request,
    "mailgun": mailgun_request,
    "gitlab": gitlab_request,
    "linear": linear_request,
    "asyncqueue": asyncqueue_request,
    "zoom": zoom_request,
    "meta": meta_request,
    "x": x_request,
    "dropbox": dropbox_request,
    "msgraph": msgraph_request,
}
KEYS = {
    "razorpay": ("{n}", "header:X-Razorpay-Event-Id"),
    "twilio": ("tok-{n}", "header:I-Twilio-Idempotency-Token"),
    "paddle": ("evt_{n}", "json:$.event_id"),
    "square": ("sq-{n}", "json:$.event_id"),
    "mailgun": ("mg-{n}", "json:$.event-data.id"),
    "gitlab": ("gl-{n}", "header:Idempotency-Key"),
    "linear": ("li-{n}", "header:Linear-Delivery"),
    "asyncqueue": ("task-{n}", "json:$.taskId"),
    # No id of their own: the body's hash.
    **{p: ("{sha256}", "sha256") for p in ("zoom", "meta", "x", "dropbox", "msgraph")},
}


def tampered(sent: Sent) -> Sent:
    if "X-Gitlab-Token" in sent.headers:
        return Sent(sent.body, {**sent.headers, "X-Gitlab-Token": "guessed"})
    if b"clientState" in sent.body:
        return Sent(sent.body.replace(SECRET.encode(), b"guessed"), sent.headers)
    body = sent.body.replace(b"e", b"E", 1)
    return Sent(body, sent.headers, sent.query)


async def post(client: Client, provider: str, sent: Sent) -> Any:
    path = f"/hooks/{provider}" + (f"?{sent.query}" if sent.query else "")
    return await client.post(path, data=sent.body, headers=sent.headers)


@pytest.mark.parametrize("provider", sorted(REQUESTS))
async def test_preset_end_to_end(
    make_relay: RelayFactory, upstream: Backend, provider: str
) -> None:
    extra: dict[str, Any] = {"preset": provider, "verify": {"secret_env": "SECRET"}}
    if provider == "meta":
        extra["handshake"] = {"verify_token_env": "SECRET"}
    if provider in ("twilio", "square"):
        extra["public_url"] = f"{PUBLIC}/hooks/{provider}"
    client = await make_relay(route(upstream, name=provider, **extra), env={"SECRET": SECRET})
    n = str(time.time_ns())  # never the same ids twice
    sent = REQUESTS[provider](n)
    first = await post(client, provider, sent)
    assert first.status == 202, await first.text()
    event_id = (await first.json())["event_id"]
    retry = await post(client, provider, sent)
    assert (retry.status, retry.headers.get(REPLAYED)) == (202, "true")
    forged = await post(client, provider, tampered(sent))
    assert forged.status == 401
    assert (await forged.json())["error"] == "bad_signature"

    store = client.app[OWN_STORE]

    async def delivered() -> bool:
        info = await store.get_event(event_id)
        return info is not None and [d.state for d in info.deliveries] == ["delivered"]

    await eventually(delivered, f"{provider}'s event delivered")
    info = await store.get_event(event_id)
    assert info is not None
    key, source = KEYS[provider]
    expected = key.format(n=n, sha256=hashlib.sha256(sent.body).hexdigest())
    assert (info.key, info.key_source) == (expected, source)
    assert len(upstream.seen) == 1
    assert BACKEND_CHECKS[provider](upstream.seen[0])


async def test_a_url_signature_checked_against_the_wrong_url_says_which(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    # No public_url: the relay rebuilds the URL from the request, which here is the
    # test server's, not the one Twilio signed.
    settings: dict[str, Any] = {"preset": "twilio", "verify": {"secret_env": "SECRET"}}
    client = await make_relay(route(upstream, name="twilio", **settings), env={"SECRET": SECRET})
    with structlog.testing.capture_logs() as logs:
        resp = await post(client, "twilio", twilio_request("1"))
    assert resp.status == 401
    (line,) = [x for x in logs if x["event"] == "signature_url_checked"]
    assert line["url"] == str(client.make_url("/hooks/twilio"))
    assert line["reason"] == "signature_mismatch"
    # The query's values stay hidden in the log line (they may carry tokens).
    with structlog.testing.capture_logs() as logs:
        resp = await post(client, "twilio", Sent(b"a=1", {"X-Twilio-Signature": "x" * 28}, "k=v"))
    assert resp.status == 401
    (line,) = [x for x in logs if x["event"] == "signature_url_checked"]
    assert line["url"].endswith("/hooks/twilio?k=[redacted]"), line["url"]


def via_proxy() -> Sent:
    """A Twilio request as a proxy in front passes it on, with the public URL in its
    forwarding headers."""
    sent = twilio_request(str(time.time_ns()))
    forwarded = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "hooks.example.com"}
    return Sent(sent.body, {**sent.headers, **forwarded})


async def twilio_relay(make_relay: RelayFactory, upstream: Backend, **top: Any) -> Client:
    settings: dict[str, Any] = {"preset": "twilio", "verify": {"secret_env": "SECRET"}}
    return await make_relay(
        route(upstream, name="twilio", **settings), env={"SECRET": SECRET}, **top
    )


async def test_behind_a_trusted_proxy_the_url_comes_from_its_forwarding_headers(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    trusting = await twilio_relay(make_relay, upstream, trusted_proxies=["127.0.0.1/32"])
    sent = via_proxy()
    assert (await post(trusting, "twilio", sent)).status == 202
    elsewhere = Sent(sent.body, {**sent.headers, "X-Forwarded-Host": "other.example.com"})
    assert (await post(trusting, "twilio", elsewhere)).status == 401


async def test_forwarding_headers_from_an_untrusted_peer_are_not_the_url(
    make_relay: RelayFactory, upstream: Backend
) -> None:
    wary = await twilio_relay(make_relay, upstream)
    assert (await post(wary, "twilio", via_proxy())).status == 401
