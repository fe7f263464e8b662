"""Schemes that sign a timestamp with the body, so a captured request goes stale:
stripe, slack, zoom, paddle and standard-webhooks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Final

from relay.signatures.common import (
    MALFORMED,
    MISMATCH,
    MISSING,
    OUT_OF_TOLERANCE,
    Reason,
    Scheme,
    Signed,
    decode_digest,
    encode_digest,
    mac,
    matches,
    timestamp,
    within,
)

SLACK_TIMESTAMP_HEADER: Final = "X-Slack-Request-Timestamp"
ZOOM_TIMESTAMP_HEADER: Final = "x-zm-request-timestamp"
SW_ID_HEADER: Final = "webhook-id"
SW_TIMESTAMP_HEADER: Final = "webhook-timestamp"


def _parse_pairs(value: str, sep: str, ts_key: str, sig_key: str) -> tuple[int, list[bytes]] | None:
    """``t=...,v1=...`` (Stripe) or ``ts=...;h1=...`` (Paddle): the first timestamp and
    every well-formed hex digest."""
    ts: int | None = None
    found_t = False
    digests: list[bytes] = []
    for item in value.split(sep):
        key, eq, val = item.strip().partition("=")
        if not eq:
            continue
        # Stripe's libraries read the first t= and ignore later ones; so do we,
        # or a sender-appended t= could shift which timestamp is checked.
        if key == ts_key and not found_t:
            found_t = True
            ts = timestamp(val)
        elif key == sig_key:
            digest = decode_digest(val, "hex")
            if digest is not None:
                digests.append(digest)
    if ts is None or not digests:
        return None
    return ts, digests


def verify_stripe(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    value = msg.header(scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    parsed = _parse_pairs(value, ",", "t", "v1")
    if parsed is None:
        return MALFORMED
    ts, digests = parsed
    # Stripe rejects only old timestamps (stripe-python: t < now - tolerance):
    # a sender clock running ahead must not lose live webhooks.
    if ts < now - tolerance:
        return OUT_OF_TOLERANCE
    # Signed text uses the integer as Stripe's libraries format it ("%d"),
    # so "t=0123" is checked the way their verifiers would check it.
    return None if matches(secrets, f"{ts}.".encode() + msg.body, digests) else MISMATCH


def verify_paddle(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    value = msg.header(scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    parsed = _parse_pairs(value, ";", "ts", "h1")
    if parsed is None:
        return MALFORMED
    ts, digests = parsed
    # Paddle's SDK refuses both directions (its default variance is 5 s).
    if not within(ts, now, tolerance):
        return OUT_OF_TOLERANCE
    return None if matches(secrets, f"{ts}:".encode() + msg.body, digests) else MISMATCH


def _verify_v0(
    scheme: Scheme,
    secrets: Sequence[bytes],
    msg: Signed,
    now: float,
    tolerance: float,
    ts_header: str,
) -> Reason | None:
    """Slack's and Zoom's: ``v0=hex`` of ``v0:<timestamp header as sent>:<body>``."""
    value = msg.header(scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    raw_ts = msg.header(ts_header)
    ts = timestamp(raw_ts)
    value = value.strip()
    if raw_ts is None or ts is None or not value.startswith("v0="):
        return MALFORMED
    digest = decode_digest(value[3:], "hex")
    if digest is None:
        return MALFORMED
    if not within(ts, now, tolerance):
        return OUT_OF_TOLERANCE
    # The timestamp header exactly as sent is signed, not a re-formatted int.
    message = b"v0:" + raw_ts.strip().encode("ascii") + b":" + msg.body
    return None if matches(secrets, message, [digest]) else MISMATCH


def verify_slack(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    return _verify_v0(scheme, secrets, msg, now, tolerance, SLACK_TIMESTAMP_HEADER)


def verify_zoom(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    return _verify_v0(scheme, secrets, msg, now, tolerance, ZOOM_TIMESTAMP_HEADER)


def verify_standard(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    value = msg.header(scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    msg_id = msg.header(SW_ID_HEADER)
    ts = timestamp(msg.header(SW_TIMESTAMP_HEADER))
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
            digest = decode_digest(sig, "base64")
            if digest is not None:
                digests.append(digest)
    if not digests:
        return MALFORMED
    if not within(ts, now, tolerance):
        return OUT_OF_TOLERANCE
    message = id_bytes + f".{ts}.".encode() + msg.body
    return None if matches(secrets, message, digests) else MISMATCH


def sign_timestamped(
    scheme: Scheme, secret: bytes, headers: Mapping[str, str], body: bytes, ts: int
) -> dict[str, str]:
    header = scheme.signature_header
    if scheme.name == "stripe":
        return {header: f"t={ts},v1={mac(secret, f'{ts}.'.encode() + body).hex()}"}
    if scheme.name == "paddle":
        return {header: f"ts={ts};h1={mac(secret, f'{ts}:'.encode() + body).hex()}"}
    if scheme.name in ("slack", "zoom"):
        ts_header = SLACK_TIMESTAMP_HEADER if scheme.name == "slack" else ZOOM_TIMESTAMP_HEADER
        return {ts_header: str(ts), header: f"v0={mac(secret, f'v0:{ts}:'.encode() + body).hex()}"}
    msg_id = Signed(headers, b"").header(SW_ID_HEADER)
    if not msg_id:
        raise ValueError("standard-webhooks: no webhook-id header to sign")
    try:
        id_bytes = msg_id.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise ValueError("standard-webhooks: webhook-id is not encodable") from None
    digest = mac(secret, id_bytes + f".{ts}.".encode() + body)
    return {
        SW_ID_HEADER: msg_id,
        SW_TIMESTAMP_HEADER: str(ts),
        header: "v1," + encode_digest(digest, "base64"),
    }
