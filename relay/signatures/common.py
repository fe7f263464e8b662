"""What every scheme shares: the signed request's parts, HMACs, digests as text, and
timestamps (pure: no I/O, no clock reads)."""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Final, Literal

Encoding = Literal["hex", "base64"]
Reason = Literal[
    "missing_signature",
    "malformed_signature",
    "timestamp_out_of_tolerance",
    "signature_mismatch",
]

MISSING: Final[Reason] = "missing_signature"
MALFORMED: Final[Reason] = "malformed_signature"
OUT_OF_TOLERANCE: Final[Reason] = "timestamp_out_of_tolerance"
MISMATCH: Final[Reason] = "signature_mismatch"

SHA256_SIZE: Final = hashlib.sha256().digest_size
_HEX = re.compile(r"[0-9a-fA-F]+", re.ASCII)
# ASCII digits only: str.isdigit() and int() also take other scripts' digits,
# which no provider sends and which must not be signed as if they were "123".
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)


# The header carrying the signature when a Scheme names none (GitLab's carries a
# shared token; Mailgun and Graph sign inside the body: there, the header is unused).
DEFAULT_HEADERS: Final[Mapping[str, str]] = {
    "stripe": "Stripe-Signature",
    "github": "X-Hub-Signature-256",
    "shopify": "X-Shopify-Hmac-Sha256",
    "slack": "X-Slack-Signature",
    "standard-webhooks": "webhook-signature",
    "hmac-sha256": "X-Signature",
    "razorpay": "X-Razorpay-Signature",
    "twilio": "X-Twilio-Signature",
    "paddle": "Paddle-Signature",
    "square": "X-Square-Hmacsha256-Signature",
    "gitlab": "X-Gitlab-Token",
    "linear": "Linear-Signature",
    "zoom": "x-zm-signature",
    "meta": "X-Hub-Signature-256",
    "mailgun": "X-Mailgun-Signature",
    "msgraph": "X-Msgraph-Client-State",
    "x": "X-Twitter-Webhooks-Signature",
    "dropbox": "X-Dropbox-Signature",
}
# Provider formats are fixed; only hmac-sha256 takes encoding and prefix from config.
BODY_FORMATS: Final[Mapping[str, tuple[Encoding, str]]] = {
    "github": ("hex", "sha256="),
    "meta": ("hex", "sha256="),
    "shopify": ("base64", ""),
    "razorpay": ("hex", ""),
    "linear": ("hex", ""),
    "dropbox": ("hex", ""),
    "x": ("base64", "sha256="),
}


@dataclass(frozen=True, slots=True)
class Scheme:
    """A signature scheme by name (a key of ``DEFAULT_HEADERS``).

    ``header`` overrides the name of the header carrying the signature (None:
    the provider's). ``encoding`` and ``prefix`` apply to ``hmac-sha256`` only.
    """

    name: str
    header: str | None = None
    encoding: Encoding = "hex"
    prefix: str = ""

    def __post_init__(self) -> None:
        # Config builds Schemes from YAML strings the type checker never saw.
        if self.name not in DEFAULT_HEADERS:
            raise ValueError(f"unknown signature scheme: {self.name!r}")
        if self.encoding not in ("hex", "base64"):
            raise ValueError(f"unknown signature encoding: {self.encoding!r}")
        if self.header == "":
            raise ValueError("signature header name must not be empty (None for the default)")

    @property
    def signature_header(self) -> str:
        return self.header or DEFAULT_HEADERS[self.name]

    @property
    def body_format(self) -> tuple[Encoding, str]:
        """(encoding, prefix) of a signature over the body alone."""
        return BODY_FORMATS.get(self.name, (self.encoding, self.prefix))


@dataclass(frozen=True, slots=True)
class Signed:
    """What a sender signed: its headers, the raw body, and the URL it called (the
    route's ``public_url``, or one rebuilt from the request; "" when unknown)."""

    headers: Mapping[str, str]
    body: bytes
    url: str = ""

    def header(self, name: str) -> str | None:
        # A CIMultiDictProxy answers get() case-insensitively; a plain dict needs the scan.
        value = self.headers.get(name)
        if value is None:
            lowered = name.lower()
            for key, candidate in self.headers.items():
                if isinstance(key, str) and key.lower() == lowered:
                    value = candidate
                    break
        return value if isinstance(value, str) else None


def mac(key: bytes, msg: bytes, digest: str = "sha256") -> bytes:
    return hmac.new(key, msg, digest).digest()


def decode_digest(text: str, encoding: Encoding, size: int = SHA256_SIZE) -> bytes | None:
    """The digest a header carries, or None; the exact text length is checked first so a
    huge or hostile value never reaches a decoder."""
    text = text.strip()
    if encoding == "hex":
        if len(text) != 2 * size or not _HEX.fullmatch(text):
            return None
        return bytes.fromhex(text)
    if len(text) != 4 * ((size + 2) // 3):
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII str
        return None
    return raw if len(raw) == size else None


def header_digest(
    msg: Signed, header: str, encoding: Encoding, prefix: str = "", size: int = SHA256_SIZE
) -> bytes | Reason:
    """The one digest a signature header carries, or why not: ``MISSING`` without the
    header, ``MALFORMED`` when it is not ``prefix`` and ``size`` bytes in ``encoding``."""
    value = msg.header(header)
    if value is None or not value.strip():
        return MISSING
    value = value.strip()
    if not value.startswith(prefix):
        return MALFORMED
    digest = decode_digest(value[len(prefix) :], encoding, size)
    return MALFORMED if digest is None else digest


def encode_digest(digest: bytes, encoding: Encoding) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")


def matches(
    secrets: Sequence[bytes],
    message: bytes,
    candidates: Sequence[bytes],
    digest: str = "sha256",
) -> bool:
    for secret in secrets:
        # HMAC with an empty key is forgeable by anyone; an unset secret
        # environment variable must fail closed, not accept everything.
        if not secret:
            continue
        expected = mac(secret, message, digest)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return True
    return False


def equals_secret(secrets: Sequence[bytes], value: str) -> bool:
    """A shared token sent as it is (GitLab's, Graph's clientState), compared in constant time."""
    try:
        given = value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return any(secret and hmac.compare_digest(secret, given) for secret in secrets)


def timestamp(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if _TIMESTAMP.fullmatch(text) else None


def within(ts: float, now: float, tolerance: float) -> bool:
    return abs(now - ts) <= tolerance
