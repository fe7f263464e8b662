"""Schemes that sign the URL the sender called: twilio and square. Behind a load
balancer that URL is not the one the relay sees: the route's ``public_url`` gives it."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterator, Sequence
from typing import Final
from urllib.parse import parse_qs, parse_qsl, urlsplit

from relay.signatures.common import (
    MALFORMED,
    MISMATCH,
    Reason,
    Scheme,
    Signed,
    header_digest,
    matches,
)

TWILIO_SETTINGS_HEADER: Final = "X-Twilio-Webhooks-Signature-Settings"
_TWILIO_DIGESTS: Final = {"HMAC_SHA1": ("sha1", 20), "HMAC_SHA256": ("sha256", 32)}
# A form body Twilio signs has a few dozen fields; far more is not a Twilio request.
_MAX_FIELDS: Final = 1000
_FORM: Final = "application/x-www-form-urlencoded"


def _twilio_algorithm(settings: str | None) -> str:
    """The algorithm named by the signature settings header; none means Twilio's legacy
    Auth Token signature, HMAC-SHA1 (as twilio's RequestValidator reads it)."""
    for part in (settings or "").split(","):
        name, sep, value = part.partition("=")
        if sep and name.strip() == "algorithm" and value.strip():
            return value.strip().upper()
    return "HMAC_SHA1"


def _with_and_without_port(url: str) -> Iterator[str]:
    """Twilio signs some URLs with the default port and some without; its own
    validator accepts either, so the relay does too."""
    yield url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:  # a Host header such as "a:99999"
        return
    if port is None:
        default = 443 if parts.scheme == "https" else 80
        yield parts._replace(netloc=f"{parts.netloc}:{default}").geturl()
    else:
        yield parts._replace(netloc=parts.netloc.rsplit(":", 1)[0]).geturl()


def _form(msg: Signed) -> list[tuple[str, str]] | None:
    content_type = (msg.header("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != _FORM or not msg.body:
        return []
    try:
        return parse_qsl(
            msg.body.decode("utf-8"), keep_blank_values=True, max_num_fields=_MAX_FIELDS
        )
    except ValueError:  # not UTF-8, or too many fields
        return None


def verify_twilio(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, _now: float, _tolerance: float
) -> Reason | None:
    algorithm = _twilio_algorithm(msg.header(TWILIO_SETTINGS_HEADER))
    digest_name, size = _TWILIO_DIGESTS.get(algorithm, ("", 20))
    digest = header_digest(msg, scheme.signature_header, "base64", size=size)
    if isinstance(digest, str):
        return digest
    if not digest_name:  # an algorithm this relay does not know
        return MALFORMED
    if not msg.url:
        return MISMATCH
    body_hash = parse_qs(urlsplit(msg.url).query).get("bodySHA256")
    if body_hash:
        # A JSON body: the URL carries the body's hash, and the URL alone is signed.
        if not hmac.compare_digest(hashlib.sha256(msg.body).hexdigest(), body_hash[0]):
            return MISMATCH
        params: list[tuple[str, str]] = []
    elif (form := _form(msg)) is None:
        return MALFORMED
    else:
        params = form
    # Each name once, then each of its distinct values, both sorted (as Twilio signs).
    names = sorted({name for name, _ in params})
    tail = "".join(name + v for name in names for v in sorted({v for n, v in params if n == name}))
    for url in _with_and_without_port(msg.url):
        if matches(secrets, (url + tail).encode("utf-8"), [digest], digest_name):
            return None
    return MISMATCH


def verify_square(
    scheme: Scheme, secrets: Sequence[bytes], msg: Signed, _now: float, _tolerance: float
) -> Reason | None:
    digest = header_digest(msg, scheme.signature_header, "base64")
    if isinstance(digest, str):
        return digest
    if not msg.url:
        return MISMATCH
    return None if matches(secrets, msg.url.encode("utf-8") + msg.body, [digest]) else MISMATCH
