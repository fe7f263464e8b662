"""Webhook signature schemes: verify incoming signatures, re-sign upstream requests.

Pure: no I/O and no clock reads (``now`` is a parameter). Every scheme is an
HMAC-SHA256 over the raw body bytes, compared with ``hmac.compare_digest``.
``verify`` never raises on what a sender controls (headers, body); it answers
``None`` or one short, stable reason that is safe to log and count: reasons
never carry secrets or header values.

Secrets are raw HMAC keys (bytes); ``decode_secret`` turns the configured text
into one. Several secrets may be given so a secret can be rotated without
dropping webhooks: a signature made with any of them is accepted.
"""

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

_DIGEST_SIZE: Final = hashlib.sha256().digest_size
# Exact lengths of one SHA-256 digest as text: checking them first keeps a huge
# or hostile value from reaching a decoder at all.
_HEX_LEN: Final = 2 * _DIGEST_SIZE
_B64_LEN: Final = 4 * ((_DIGEST_SIZE + 2) // 3)
_HEX = re.compile(r"[0-9a-fA-F]+", re.ASCII)
# ASCII digits only: str.isdigit() and int() also take other scripts' digits,
# which no provider sends and which must not be signed as if they were "123".
_TIMESTAMP = re.compile(r"[0-9]{1,12}", re.ASCII)

WHSEC_PREFIX: Final = "whsec_"
SLACK_TIMESTAMP_HEADER: Final = "X-Slack-Request-Timestamp"
SW_ID_HEADER: Final = "webhook-id"
SW_TIMESTAMP_HEADER: Final = "webhook-timestamp"


# The header carrying the signature when a Scheme names none.
DEFAULT_HEADERS: Final[Mapping[str, str]] = {
    "stripe": "Stripe-Signature",
    "github": "X-Hub-Signature-256",
    "shopify": "X-Shopify-Hmac-Sha256",
    "slack": "X-Slack-Signature",
    "standard-webhooks": "webhook-signature",
    "hmac-sha256": "X-Signature",
}
# Provider formats are fixed; only hmac-sha256 takes encoding and prefix from config.
_BODY_FORMATS: Final[Mapping[str, tuple[Encoding, str]]] = {
    "github": ("hex", "sha256="),
    "shopify": ("base64", ""),
}


@dataclass(frozen=True, slots=True)
class Scheme:
    """A signature scheme by name (a key of ``SCHEMES``).

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
        """(encoding, prefix) of the github, shopify and hmac-sha256 signatures."""
        return _BODY_FORMATS.get(self.name, (self.encoding, self.prefix))


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    # A CIMultiDictProxy answers get() case-insensitively; a plain dict needs the scan.
    value = headers.get(name)
    if value is None:
        lowered = name.lower()
        for key, candidate in headers.items():
            if isinstance(key, str) and key.lower() == lowered:
                value = candidate
                break
    return value if isinstance(value, str) else None


def _decode_digest(text: str, encoding: Encoding) -> bytes | None:
    text = text.strip()
    if encoding == "hex":
        if len(text) != _HEX_LEN or not _HEX.fullmatch(text):
            return None
        return bytes.fromhex(text)
    if len(text) != _B64_LEN:
        return None
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):  # ValueError: non-ASCII str
        return None
    return raw if len(raw) == _DIGEST_SIZE else None


def _encode_digest(digest: bytes, encoding: Encoding) -> str:
    return digest.hex() if encoding == "hex" else base64.b64encode(digest).decode("ascii")


def _matches(secrets: Sequence[bytes], message: bytes, candidates: Sequence[bytes]) -> bool:
    for secret in secrets:
        # HMAC with an empty key is forgeable by anyone; an unset secret
        # environment variable must fail closed, not accept everything.
        if not secret:
            continue
        expected = _hmac(secret, message)
        if any(hmac.compare_digest(expected, c) for c in candidates):
            return True
    return False


def _timestamp(text: str | None) -> int | None:
    if text is None:
        return None
    text = text.strip()
    return int(text) if _TIMESTAMP.fullmatch(text) else None


def _within(ts: int, now: float, tolerance: float) -> bool:
    return abs(now - ts) <= tolerance


# --- verifiers: (scheme, secrets, headers, body, now, tolerance) -> reason ------


def _verify_body_hmac(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    _now: float,
    _tolerance: float,
) -> Reason | None:
    value = _header(headers, scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    value = value.strip()
    encoding, prefix = scheme.body_format
    if not value.startswith(prefix):
        return MALFORMED
    digest = _decode_digest(value[len(prefix) :], encoding)
    if digest is None:
        return MALFORMED
    return None if _matches(secrets, body, [digest]) else MISMATCH


def _parse_stripe(value: str) -> tuple[int, list[bytes]] | None:
    ts: int | None = None
    found_t = False
    digests: list[bytes] = []
    for item in value.split(","):
        key, sep, val = item.strip().partition("=")
        if not sep:
            continue
        # Stripe's libraries read the first t= and ignore later ones; so do we,
        # or a sender-appended t= could shift which timestamp is checked.
        if key == "t" and not found_t:
            found_t = True
            ts = _timestamp(val)
        elif key == "v1":
            digest = _decode_digest(val, "hex")
            if digest is not None:
                digests.append(digest)
    if ts is None or not digests:
        return None
    return ts, digests


def _verify_stripe(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float,
) -> Reason | None:
    value = _header(headers, scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    parsed = _parse_stripe(value)
    if parsed is None:
        return MALFORMED
    ts, digests = parsed
    # Stripe rejects only old timestamps (stripe-python: t < now - tolerance):
    # a sender clock running ahead must not lose live webhooks.
    if ts < now - tolerance:
        return OUT_OF_TOLERANCE
    # Signed text uses the integer as Stripe's libraries format it ("%d"),
    # so "t=0123" is checked the way their verifiers would check it.
    return None if _matches(secrets, f"{ts}.".encode() + body, digests) else MISMATCH


def _verify_slack(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float,
) -> Reason | None:
    value = _header(headers, scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    raw_ts = _header(headers, SLACK_TIMESTAMP_HEADER)
    ts = _timestamp(raw_ts)
    value = value.strip()
    if raw_ts is None or ts is None or not value.startswith("v0="):
        return MALFORMED
    digest = _decode_digest(value[3:], "hex")
    if digest is None:
        return MALFORMED
    if not _within(ts, now, tolerance):
        return OUT_OF_TOLERANCE
    # Slack signs the timestamp header exactly as sent, not a re-formatted int.
    message = b"v0:" + raw_ts.strip().encode("ascii") + b":" + body
    return None if _matches(secrets, message, [digest]) else MISMATCH


def _verify_standard(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    now: float,
    tolerance: float,
) -> Reason | None:
    value = _header(headers, scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    msg_id = _header(headers, SW_ID_HEADER)
    ts = _timestamp(_header(headers, SW_TIMESTAMP_HEADER))
    if not msg_id or ts is None:
        return MALFORMED
    try:
        # aiohttp hands non-UTF-8 header bytes over as surrogate escapes;
        # this gives back the bytes the sender signed.
        id_bytes = msg_id.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return MALFORMED
    digests: list[bytes] = []
    for entry in value.split():
        version, sep, sig = entry.partition(",")
        # Other versions (v1a: Ed25519) may sit beside v1 and are not ours to judge.
        if sep and version == "v1":
            digest = _decode_digest(sig, "base64")
            if digest is not None:
                digests.append(digest)
    if not digests:
        return MALFORMED
    if not _within(ts, now, tolerance):
        return OUT_OF_TOLERANCE
    message = id_bytes + f".{ts}.".encode() + body
    return None if _matches(secrets, message, digests) else MISMATCH


_VERIFIERS: Final = {
    "stripe": _verify_stripe,
    "github": _verify_body_hmac,
    "shopify": _verify_body_hmac,
    "slack": _verify_slack,
    "standard-webhooks": _verify_standard,
    "hmac-sha256": _verify_body_hmac,
}

SCHEMES: Final[Mapping[str, Scheme]] = {name: Scheme(name) for name in DEFAULT_HEADERS}


def verify(
    scheme: Scheme,
    secrets: Sequence[bytes],
    headers: Mapping[str, str],
    body: bytes,
    *,
    now: float,
    tolerance: float,
) -> Reason | None:
    """``None`` when a signature made with one of ``secrets`` covers ``body``, else why not.

    ``tolerance`` (seconds) bounds the signed timestamp where the scheme has one:
    stripe rejects only timestamps older than ``now - tolerance``; slack and
    standard-webhooks reject both directions. github, shopify and hmac-sha256
    sign no timestamp and ignore ``now`` and ``tolerance``.
    """
    return _VERIFIERS[scheme.name](scheme, secrets, headers, body, now, tolerance)


def sign(
    scheme: Scheme, secret: bytes, headers: Mapping[str, str], body: bytes, *, now: float
) -> dict[str, str]:
    """Headers that make a request carrying ``body`` verify under ``secret`` as of ``now``.

    Meant for re-signing a queued event before it goes upstream, so a backend
    that checks the provider's signature and its freshness still accepts it.
    Set them case-insensitively, replacing any incoming ones. standard-webhooks
    keeps the incoming ``webhook-id`` (backends dedupe on it) and raises
    ``ValueError`` when there is none to keep.
    """
    if not secret:
        raise ValueError("signing secret must not be empty")
    ts = int(now)
    header = scheme.signature_header
    if scheme.name == "stripe":
        digest = _hmac(secret, f"{ts}.".encode() + body)
        return {header: f"t={ts},v1={digest.hex()}"}
    if scheme.name == "slack":
        digest = _hmac(secret, f"v0:{ts}:".encode() + body)
        return {SLACK_TIMESTAMP_HEADER: str(ts), header: f"v0={digest.hex()}"}
    if scheme.name == "standard-webhooks":
        msg_id = _header(headers, SW_ID_HEADER)
        if not msg_id:
            raise ValueError("standard-webhooks: no webhook-id header to sign")
        try:
            id_bytes = msg_id.encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise ValueError("standard-webhooks: webhook-id is not encodable") from None
        digest = _hmac(secret, id_bytes + f".{ts}.".encode() + body)
        return {
            SW_ID_HEADER: msg_id,
            SW_TIMESTAMP_HEADER: str(ts),
            header: "v1," + _encode_digest(digest, "base64"),
        }
    encoding, prefix = scheme.body_format
    return {header: prefix + _encode_digest(_hmac(secret, body), encoding)}


def decode_secret(scheme: Scheme, raw: str) -> bytes:
    """The HMAC key for a configured secret; ``ValueError`` if it cannot be one.

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
