"""Schemes that sign the body alone, one HMAC-SHA256 in a header: github, meta,
shopify, razorpay, dropbox, x and the generic hmac-sha256."""

from __future__ import annotations

from collections.abc import Sequence

from relay.signatures.common import (
    MISMATCH,
    Reason,
    Scheme,
    Signed,
    encode_digest,
    header_digest,
    mac,
    matches,
)


def verify_body(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, _now: float, _tolerance: float
) -> Reason | None:
    encoding, prefix = scheme.body_format
    digest = header_digest(msg, scheme.signature_header, encoding, prefix)
    if isinstance(digest, str):
        return digest
    return None if matches(secrets, msg.body, [digest]) else MISMATCH


def sign_body(scheme: Scheme, secret: bytes, body: bytes) -> dict[str, str]:
    encoding, prefix = scheme.body_format
    return {scheme.signature_header: prefix + encode_digest(mac(secret, body), encoding)}
