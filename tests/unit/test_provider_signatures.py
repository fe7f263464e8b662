"""The new providers' schemes, each checked against the provider's own library both
ways where one exists on PyPI (twilio, razorpay, paddle-python-sdk, squareup,
mailgun): what the library signs, the relay accepts; what the relay accepts, the
library accepts; a tampered copy neither. Where no Python library exists, the
provider's published example is the vector (cited at each test)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from urllib.parse import urlencode

import pytest
import razorpay
from hypothesis import given, settings
from hypothesis import strategies as st
from mailgun.security import SecurityGuard
from paddle_billing.Notifications import Secret, Verifier
from paddle_billing.Notifications.PaddleSignature import PaddleSignature
from square.utils.webhooks_helper import verify_signature as square_verify
from twilio.request_validator import RequestValidator

from relay.signatures import SCHEMES, sign, verify

TOL = 300.0
FORM = "application/x-www-form-urlencoded"


def _ok(scheme: str, secret: str, headers: dict[str, str], body: bytes, url: str = "") -> bool:
    now = time.time()
    found = verify(
        SCHEMES[scheme], [secret.encode()], headers, body, now=now, tolerance=TOL, url=url
    )
    return found is None


# --- twilio -------------------------------------------------------------------------

TWILIO_TOKEN = "12345"
TWILIO_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
# Twilio's documented example (twilio.com/docs/usage/webhooks/webhooks-security).
TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_twilio_form_signature_from_its_library_and_its_docs() -> None:
    validator = RequestValidator(TWILIO_TOKEN)
    signature = validator.compute_signature(TWILIO_URL, TWILIO_PARAMS)
    assert signature == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="  # the value the docs print
    body = urlencode(TWILIO_PARAMS).encode()
    headers = {"X-Twilio-Signature": signature, "Content-Type": FORM}
    assert _ok("twilio", TWILIO_TOKEN, headers, body, TWILIO_URL)
    # Twilio sometimes signs with the default port: either way is accepted.
    with_port = TWILIO_URL.replace("mycompany.com", "mycompany.com:443")
    assert _ok("twilio", TWILIO_TOKEN, headers, body, with_port)
    tampered = urlencode({**TWILIO_PARAMS, "Digits": "9999"}).encode()
    assert not _ok("twilio", TWILIO_TOKEN, headers, tampered, TWILIO_URL)
    assert not _ok("twilio", TWILIO_TOKEN, headers, body, "https://mycompany.com/other.php")
    assert not _ok("twilio", "other-token", headers, body, TWILIO_URL)


def test_twilio_json_body_is_signed_through_its_hash_in_the_url() -> None:
    body = b'{"property": "value", "boolean": true}'
    url = f"https://mycompany.com/myapp?bodySHA256={hashlib.sha256(body).hexdigest()}"
    validator = RequestValidator(TWILIO_TOKEN)
    signature = validator.compute_signature(url, {})
    headers = {"X-Twilio-Signature": signature, "Content-Type": "application/json"}
    assert validator.validate(url, body.decode(), signature)
    assert _ok("twilio", TWILIO_TOKEN, headers, body, url)
    assert not _ok("twilio", TWILIO_TOKEN, headers, body + b" ", url)


def test_twilio_sha256_signatures_named_by_the_settings_header() -> None:
    validator = RequestValidator("shared-key-secret")
    signature = validator.compute_signature(TWILIO_URL, TWILIO_PARAMS, "HMAC_SHA256")
    body = urlencode(TWILIO_PARAMS).encode()
    settings_header = "key=webhooks_sharedkey_1,algorithm=HMAC_SHA256"
    headers = {
        "X-Twilio-Signature": signature,
        "X-Twilio-Webhooks-Signature-Settings": settings_header,
        "Content-Type": FORM,
    }
    assert _ok("twilio", "shared-key-secret", headers, body, TWILIO_URL)
    headers["X-Twilio-Webhooks-Signature-Settings"] = "algorithm=HMAC_MD5"
    reason = verify(
        SCHEMES["twilio"],
        [b"shared-key-secret"],
        headers,
        body,
        now=0,
        tolerance=TOL,
        url=TWILIO_URL,
    )
    assert reason == "malformed_signature"


@settings(max_examples=150, deadline=None)
@given(
    params=st.lists(st.tuples(st.text(min_size=1, max_size=8), st.text(max_size=12)), max_size=6),
    path=st.text(alphabet="abc/-_", max_size=10),
)
def test_twilio_agrees_with_its_library(params: list[tuple[str, str]], path: str) -> None:
    url = f"https://example.com/{path}"
    body = urlencode(params).encode()
    multi: dict[str, list[str]] = {}
    for name, value in params:
        multi.setdefault(name, []).append(value)
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, _MultiDict(multi))
    headers = {"X-Twilio-Signature": signature, "Content-Type": FORM}
    assert _ok("twilio", TWILIO_TOKEN, headers, body, url)


class _MultiDict(dict[str, list[str]]):
    """What twilio's validator reads from Flask or Django: each name's every value."""

    def getall(self, name: str) -> list[str]:
        return self[name]


# --- razorpay ------------------------------------------------------------------------


def test_razorpay_signature_checked_by_its_library() -> None:
    secret = "razorpay-webhook-secret"
    body = json.dumps({"entity": "event", "event": "payment.captured"}).encode()
    signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    utility = razorpay.Client(auth=("key", "secret")).utility
    assert utility.verify_webhook_signature(body.decode(), signature, secret)
    headers = {"X-Razorpay-Signature": signature}
    assert _ok("razorpay", secret, headers, body)
    assert not _ok("razorpay", secret, headers, body + b" ")
    # What the relay re-signs, Razorpay's library accepts.
    fresh = sign(SCHEMES["razorpay"], secret.encode(), {}, body, now=time.time())
    assert utility.verify_webhook_signature(body.decode(), fresh["X-Razorpay-Signature"], secret)
    with pytest.raises(razorpay.errors.SignatureVerificationError):
        utility.verify_webhook_signature(body.decode(), "0" * 64, secret)


# --- paddle --------------------------------------------------------------------------

PADDLE_SECRET = "pdl_ntfset_01gkpjp8bkh3ytgc5cd3ie2b1s_secret"


class _PaddleRequest:
    def __init__(self, headers: dict[str, str], body: bytes) -> None:
        self.headers = headers
        self.body = body


def test_paddle_signature_both_ways_with_its_sdk() -> None:
    body = json.dumps({"event_id": "evt_01", "event_type": "transaction.completed"}).encode()
    ts = int(time.time())
    h1 = PaddleSignature.calculate_hmac(PADDLE_SECRET, f"{ts}:".encode() + body).hexdigest()
    headers = {"Paddle-Signature": f"ts={ts};h1={h1}"}
    assert Verifier().verify(_PaddleRequest(headers, body), Secret(PADDLE_SECRET))
    assert _ok("paddle", PADDLE_SECRET, headers, body)
    assert not _ok("paddle", PADDLE_SECRET, headers, body.replace(b"01", b"02"))
    fresh = sign(SCHEMES["paddle"], PADDLE_SECRET.encode(), {}, body, now=time.time())
    assert Verifier().verify(_PaddleRequest(fresh, body), Secret(PADDLE_SECRET))
    stale = {"Paddle-Signature": f"ts={ts - 3600};h1={h1}"}
    reason = verify(SCHEMES["paddle"], [PADDLE_SECRET.encode()], stale, body, now=ts, tolerance=TOL)
    assert reason == "timestamp_out_of_tolerance"


# --- square --------------------------------------------------------------------------


def test_square_signature_over_the_notification_url_with_its_sdk() -> None:
    key = "square-signature-key"
    url = "https://example.com/webhooks/square"
    body = json.dumps({"merchant_id": "M1", "event_id": "e-1", "type": "payment.created"})
    digest = hmac.new(key.encode(), (url + body).encode(), hashlib.sha256).digest()
    signature = base64.b64encode(digest).decode()
    assert square_verify(
        request_body=body, signature_header=signature, signature_key=key, notification_url=url
    )
    headers = {"x-square-hmacsha256-signature": signature}
    assert _ok("square", key, headers, body.encode(), url)
    assert not _ok("square", key, headers, body.encode(), url + "/other")
    assert not square_verify(
        request_body=body, signature_header=signature, signature_key=key, notification_url=url + "/"
    )


# --- mailgun -------------------------------------------------------------------------


def test_mailgun_signature_in_the_body_checked_by_its_library() -> None:
    key = "key-mailgun-signing"
    ts, token = str(int(time.time())), "a" * 50
    signature = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    assert SecurityGuard.verify_webhook(key, token, ts, signature)
    doc = {
        "signature": {"timestamp": ts, "token": token, "signature": signature},
        "event-data": {"id": "ev-1", "event": "delivered"},
    }
    body = json.dumps(doc).encode()
    assert _ok("mailgun", key, {}, body)
    doc["signature"]["token"] = "b" * 50
    assert not _ok("mailgun", key, {}, json.dumps(doc).encode())
    # Older webhooks and routes post the same fields as a form.
    form = urlencode({"timestamp": ts, "token": token, "signature": signature}).encode()
    assert _ok("mailgun", key, {"Content-Type": FORM}, form)


# --- published vectors: no Python library -------------------------------------------


def test_zoom_signature_as_its_docs_build_it() -> None:
    # developers.zoom.us/docs/api/webhooks/#verify-webhook-events: message
    # "v0:{x-zm-request-timestamp}:{body}", HMAC-SHA256 hex under the secret token.
    secret, ts = "zoom-secret-token", str(int(time.time()))
    body = b'{"event":"meeting.started","payload":{"object":{"id":"1"}}}'
    digest = hmac.new(secret.encode(), f"v0:{ts}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"x-zm-signature": f"v0={digest}", "x-zm-request-timestamp": ts}
    assert _ok("zoom", secret, headers, body)
    assert not _ok("zoom", secret, headers, body[:-1])


def test_gitlab_token_is_compared_whole() -> None:
    # docs.gitlab.com/user/project/integrations/webhooks/#validate-requests-with-a-secret-token
    assert _ok("gitlab", "s3cret", {"X-Gitlab-Token": "s3cret"}, b"{}")
    assert not _ok("gitlab", "s3cret", {"X-Gitlab-Token": "s3cre"}, b"{}")
    with pytest.raises(ValueError, match="cannot be re-signed"):
        sign(SCHEMES["gitlab"], b"s3cret", {}, b"{}", now=0)


def test_linear_signature_and_its_body_timestamp() -> None:
    # linear.app/developers/webhooks#securing-webhooks: Linear-Signature is the hex
    # HMAC-SHA256 of the raw body; webhookTimestamp (ms) within a minute.
    secret = "lin_wh_secret"
    now_ms = int(time.time() * 1000)
    body = json.dumps({"action": "create", "type": "Issue", "webhookTimestamp": now_ms}).encode()
    sig = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    assert _ok("linear", secret, {"Linear-Signature": sig}, body)
    old = json.dumps({"action": "create", "webhookTimestamp": now_ms - 3_600_000}).encode()
    old_sig = hmac.new(secret.encode(), old, hashlib.sha256).hexdigest()
    reason = verify(
        SCHEMES["linear"],
        [secret.encode()],
        {"Linear-Signature": old_sig},
        old,
        now=time.time(),
        tolerance=TOL,
    )
    assert reason == "timestamp_out_of_tolerance"


def test_meta_x_and_dropbox_sign_the_body() -> None:
    body = b'{"object":"page","entry":[]}'
    mac = hmac.new(b"app-secret", body, hashlib.sha256)
    # developers.facebook.com/docs/graph-api/webhooks/getting-started: sha256=hex.
    assert _ok("meta", "app-secret", {"X-Hub-Signature-256": "sha256=" + mac.hexdigest()}, body)
    # developer.x.com (Account Activity API, securing webhooks): sha256=base64.
    x_sig = "sha256=" + base64.b64encode(mac.digest()).decode()
    assert _ok("x", "app-secret", {"X-Twitter-Webhooks-Signature": x_sig}, body)
    # dropbox.com/developers/reference/webhooks: hex, no prefix.
    assert _ok("dropbox", "app-secret", {"X-Dropbox-Signature": mac.hexdigest()}, body)


def test_msgraph_client_state_in_every_notification() -> None:
    # learn.microsoft.com/graph/change-notifications-delivery-webhooks: clientState.
    good = {"value": [{"clientState": "state-1", "changeType": "created"}] * 2}
    assert _ok("msgraph", "state-1", {}, json.dumps(good).encode())
    mixed = {"value": [{"clientState": "state-1"}, {"clientState": "other"}]}
    assert not _ok("msgraph", "state-1", {}, json.dumps(mixed).encode())
    assert not _ok("msgraph", "state-1", {}, json.dumps({"value": [{}]}).encode())
