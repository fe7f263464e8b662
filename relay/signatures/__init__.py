"""Webhook signature schemes: verify incoming signatures, re-sign upstream requests.

Pure: no I/O and no clock reads (``now`` is a parameter). Each family of schemes
sits in its own module (body HMACs, timestamped HMACs, URL-signing schemes, body
fields and shared tokens); this module maps names to them. Every comparison is
constant-time. ``verify`` never raises on what a sender controls (headers, body,
the URL it called); it answers ``None`` or one short, stable reason that is safe
to log and count: reasons never carry secrets or header values.

Secrets are raw keys (bytes); ``decode_secret`` turns the configured text into
one. Several secrets may be given so a secret can be rotated without dropping
webhooks: a signature made with any of them is accepted.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable, Mapping, Sequence
from typing import Final

from relay.signatures.body import sign_body, verify_body
from relay.signatures.common import (
    DEFAULT_HEADERS,
    MALFORMED,
    MISMATCH,
    MISSING,
    OUT_OF_TOLERANCE,
    Encoding,
    Reason,
    Scheme,
    Signed,
)
from relay.signatures.fields import verify_gitlab, verify_linear, verify_mailgun, verify_msgraph
from relay.signatures.timestamped import (
    SLACK_TIMESTAMP_HEADER,
    SW_ID_HEADER,
    SW_TIMESTAMP_HEADER,
    ZOOM_TIMESTAMP_HEADER,
    sign_timestamped,
    verify_paddle,
    verify_slack,
    verify_standard,
    verify_stripe,
    verify_zoom,
)
from relay.signatures.urls import verify_square, verify_twilio

__all__ = [
    "DEFAULT_HEADERS",
    "MALFORMED",
    "MISMATCH",
    "MISSING",
    "OUT_OF_TOLERANCE",
    "RESIGNABLE",
    "SCHEMES",
    "SLACK_TIMESTAMP_HEADER",
    "SW_ID_HEADER",
    "SW_TIMESTAMP_HEADER",
    "URL_SIGNED",
    "ZOOM_TIMESTAMP_HEADER",
    "Encoding",
    "Reason",
    "Scheme",
    "Signed",
    "decode_secret",
    "sign",
    "verify",
]

WHSEC_PREFIX: Final = "whsec_"

Verifier = Callable[[Scheme, Sequence[bytes], Signed, float, float], "Reason | None"]
_VERIFIERS: Final[Mapping[str, Verifier]] = {
    "stripe": verify_stripe,
    "github": verify_body,
    "meta": verify_body,
    "shopify": verify_body,
    "razorpay": verify_body,
    "dropbox": verify_body,
    "x": verify_body,
    "hmac-sha256": verify_body,
    "slack": verify_slack,
    "zoom": verify_zoom,
    "paddle": verify_paddle,
    "standard-webhooks": verify_standard,
    "twilio": verify_twilio,
    "square": verify_square,
    "gitlab": verify_gitlab,
    "mailgun": verify_mailgun,
    "msgraph": verify_msgraph,
    "linear": verify_linear,
}
SCHEMES: Final[Mapping[str, Scheme]] = {name: Scheme(name) for name in DEFAULT_HEADERS}
# Schemes whose signature covers the URL the sender called.
URL_SIGNED: Final = frozenset({"twilio", "square"})
_TIMESTAMPED: Final = frozenset({"stripe", "paddle", "slack", "zoom", "standard-webhooks"})
_BODY_ONLY: Final = frozenset({"github", "meta", "shopify", "razorpay", "dropbox", "x"})
# What ``sign`` can do for a queued event. Not the URL-signing schemes (the backend's
# URL is not the sender's), nor those signing inside the body (re-signing would change
# it), nor a shared token (forwarded as it came); linear's body timestamp cannot move.
RESIGNABLE: Final = _TIMESTAMPED | _BODY_ONLY | {"hmac-sha256"}


def verify(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float,
    url: str = "",
) -> Reason | None:
    """``None`` when a signature made with one of ``secrets`` covers the request, else why not.

    ``tolerance`` (seconds) bounds the signed timestamp where the scheme has one:
    stripe rejects only timestamps older than ``now - tolerance``; the others with a
    timestamp reject both directions. ``url`` is the URL the sender called, for the
    schemes that sign it (``URL_SIGNED``).
    """
    return _VERIFIERS[scheme.name](scheme, secrets, Signed(headers, body, url), now, tolerance)


def sign(
    scheme: Scheme, secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float
) -> dict[str, str]:
    """Headers that make a request carrying ``body`` verify under ``secret`` as of ``now``.

    Meant for re-signing a queued event before it goes upstream, so a backend
    that checks the provider's signature and its freshness still accepts it.
    Set them case-insensitively, replacing any incoming ones. standard-webhooks
    keeps the incoming ``webhook-id`` (backends dedupe on it) and raises
    ``ValueError`` when there is none to keep; a scheme not in ``RESIGNABLE``
    raises ``ValueError`` too.
    """
    if not secret:
        raise ValueError("signing secret must not be empty")
    if scheme.name in _TIMESTAMPED:
        return sign_timestamped(scheme, secret, headers, body, int(now))
    if scheme.name not in RESIGNABLE:
        raise ValueError(f"{scheme.name} signatures cannot be re-signed")
    return sign_body(scheme, secret, body)


def decode_secret(scheme: Scheme, raw: str) -> bytes:
    """The key for a configured secret; ``ValueError`` if it cannot be one.

    Surrounding whitespace is dropped: secrets read from files or pasted into
    environment variables often end in a newline that no provider meant.
    Only standard-webhooks secrets are base64 (``whsec_`` prefix optional, as
    its reference library allows). Stripe secrets look alike (``whsec_...``)
    but Stripe uses the whole text, prefix included, as the key.
    """
    text = raw.strip()
    if scheme.name == "standard-webhooks":
        if text.startswith(WHSEC_PREFIX):
            text = text[len(WHSEC_PREFIX) :]
        try:
            # Padding is often dropped when secrets are copied; restore it.
            key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        except (binascii.Error, ValueError):
            # The secret's text stays out of the message: it ends up in logs.
            raise ValueError("standard-webhooks secret is not valid base64") from None
    else:
        key = text.encode("utf-8")
    if not key:
        raise ValueError(f"{scheme.name} secret is empty")
    return key
