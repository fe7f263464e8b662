"""Schemes that sign the body alone, one HMAC-SHA256 in a header: github, meta,
shopify, razorpay, dropbox, x and the generic hmac-sha256."""

from __future__ import annotations

from collections.abc import Sequence

from relay.signatures.common import (
    MALFORMED,
    MISMATCH,
    MISSING,
    Reason,
    Scheme,
    Signed,
    decode_digest,
    encode_digest,
    mac,
    matches,
)


def verify_body(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, _now: float, _tolerance: float
) -> Reason | None:
    value = msg.header(scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    value = value.strip()
    encoding, prefix = scheme.body_format
    if not value.startswith(prefix):
        return MALFORMED
    digest = decode_digest(value[len(prefix) :], encoding)
    if digest is None:
        return MALFORMED
    return None if matches(secrets, msg.body, [digest]) else MISMATCH


def sign_body(scheme: Scheme, secret: bytes, body: bytes) -> dict[str, str]:
    encoding, prefix = scheme.body_format
    return {scheme.signature_header: prefix + encode_digest(mac(secret, body), encoding)}
