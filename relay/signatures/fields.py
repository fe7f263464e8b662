"""Schemes that read the body or carry a shared token: gitlab (the token itself),
mailgun (timestamp, token and signature inside the body), msgraph (``clientState``
in every notification) and linear (a body HMAC whose timestamp is a body field)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final
from urllib.parse import parse_qs

from relay.signatures.body import verify_body
from relay.signatures.common import (
    MALFORMED,
    MISMATCH,
    MISSING,
    OUT_OF_TOLERANCE,
    Reason,
    Scheme,
    Signed,
    decode_digest,
    equals_secret,
    matches,
    timestamp,
    within,
)

_MAX_FIELDS: Final = 1000


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError):
        return None


def verify_gitlab(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, _now: float, _tolerance: float
) -> Reason | None:
    value = msg.header(scheme.signature_header)
    if value is None or not value.strip():
        return MISSING
    return None if equals_secret(secrets, value.strip()) else MISMATCH


def _mailgun_fields(msg: Signed) -> tuple[str, str, str] | Reason | None:
    """(timestamp, token, signature) from a JSON body's ``signature`` object or a form
    body's fields (Mailgun's older webhooks and routes post forms)."""
    doc = _json(msg.body)
    if isinstance(doc, dict):
        found = doc.get("signature")
        fields = found if isinstance(found, dict) else {}
    else:
        try:
            form = parse_qs(msg.body.decode("utf-8"), max_num_fields=_MAX_FIELDS)
        except ValueError:
            return MALFORMED
        fields = {k: v[0] for k, v in form.items()}
    parts = [fields.get(name) for name in ("timestamp", "token", "signature")]
    if all(p is None for p in parts):
        return None
    if not all(isinstance(p, str) and p for p in parts):
        return MALFORMED
    ts, token, signature = parts
    assert isinstance(ts, str) and isinstance(token, str) and isinstance(signature, str)
    return ts, token, signature


def verify_mailgun(
    _scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    found = _mailgun_fields(msg)
    if found is None:
        return MISSING
    if isinstance(found, str):
        return found
    raw_ts, token, signature = found
    ts = timestamp(raw_ts)
    digest = decode_digest(signature, "hex")
    if ts is None or digest is None:
        return MALFORMED
    if not within(ts, now, tolerance):
        return OUT_OF_TOLERANCE
    # The timestamp as sent, then the token (Mailgun's documented message).
    message = (raw_ts + token).encode("utf-8")
    return None if matches(secrets, message, [digest]) else MISMATCH


def verify_msgraph(
    _scheme: Scheme, secrets: Sequence[bytes], msg: Signed, _now: float, _tolerance: float
) -> Reason | None:
    doc = _json(msg.body)
    items = doc.get("value") if isinstance(doc, dict) else None
    if not isinstance(items, list) or not items:
        return MALFORMED
    # One notification without the subscription's clientState spoils the batch.
    for item in items:
        state = item.get("clientState") if isinstance(item, dict) else None
        if not isinstance(state, str) or not state:
            return MISSING
        if not equals_secret(secrets, state):
            return MISMATCH
    return None


def verify_linear(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, now: float, tolerance: float
) -> Reason | None:
    if (why := verify_body(scheme, secrets, msg, now, tolerance)) is not None:
        return why
    # Signed, so the timestamp in the body is Linear's: milliseconds since the epoch.
    doc = _json(msg.body)
    ms = doc.get("webhookTimestamp") if isinstance(doc, dict) else None
    if not isinstance(ms, int) or isinstance(ms, bool):
        return MALFORMED
    return None if within(ms / 1000, now, tolerance) else OUT_OF_TOLERANCE
