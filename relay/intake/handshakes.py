"""Provider URL checks the relay answers itself, before deduplication and storage.

Pure: what a request looks like decides whether it is a provider's check and what the
answer is; the listener verifies signed ones first, counts, logs and replies. A
request that only looks like a check on a route whose preset has none is an ordinary
webhook: nothing here runs for it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

from relay.keys import Payload

# A challenge is an opaque token of a few dozen characters; echoing megabytes is
# not an answer any provider waits for.
MAX_CHALLENGE: Final = 2048
TEXT: Final = "text/plain"
JSON: Final = "application/json"

# Checks that come as a GET although the route's webhooks are POSTs.
GET_CHECKS: Final = frozenset({"meta", "x", "dropbox"})
# Checks the provider signs as it signs its webhooks: verified before they are answered.
SIGNED: Final = frozenset({"slack", "zoom"})


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: str
    content_type: str
    refused: str | None = None  # why not answered as the provider hoped


@dataclass(frozen=True, slots=True)
class Keys:
    """What a route answers checks with: its verify secrets (Zoom, X) and Meta's token."""

    secrets: Sequence[bytes] = ()
    verify_tokens: Sequence[bytes] = ()


_MESSAGES: Final = {
    "challenge_too_long": f"the challenge is over {MAX_CHALLENGE} characters",
    "no_plain_token": "payload.plainToken is missing",
    "no_challenge": "the challenge is missing",
    "no_validation_token": "validationToken is empty",
    "no_crc_token": "crc_token is empty",
    "verify_token_mismatch": "hub.verify_token is not the one configured",
}


def _refused(status: int, reason: str) -> Answer:
    body = json.dumps({"error": reason, "message": _MESSAGES[reason]})
    return Answer(status, body, JSON, refused=reason)


def _challenge(value: object) -> str | Answer | None:
    """A usable challenge; an Answer refusing an oversized one; None if there is none."""
    if not isinstance(value, str) or not value:
        return None
    if len(value) > MAX_CHALLENGE:
        return _refused(400, "challenge_too_long")
    return value


def _json_field(payload: Payload, kind_field: str, kind: str) -> dict[str, object] | None:
    doc = payload.json()
    if isinstance(doc, dict) and doc.get(kind_field) == kind:
        return doc
    return None


def _slack(method: str, payload: Payload, _keys: Keys) -> Answer | None:
    doc = _json_field(payload, "type", "url_verification") if method == "POST" else None
    if doc is None:
        return None
    found = _challenge(doc.get("challenge"))
    if not isinstance(found, str):
        return found
    return Answer(200, json.dumps({"challenge": found}), JSON)


def _zoom(method: str, payload: Payload, keys: Keys) -> Answer | None:
    doc = _json_field(payload, "event", "endpoint.url_validation") if method == "POST" else None
    if doc is None:
        return None
    inner = doc.get("payload")
    found = _challenge(inner.get("plainToken") if isinstance(inner, dict) else None)
    if not isinstance(found, str):
        return found or _refused(400, "no_plain_token")
    # Zoom's documented answer: the token, and its HMAC-SHA256 under the secret token.
    digest = hmac.new(keys.secrets[0], found.encode("utf-8"), hashlib.sha256).hexdigest()
    return Answer(200, json.dumps({"plainToken": found, "encryptedToken": digest}), JSON)


def _meta(method: str, payload: Payload, keys: Keys) -> Answer | None:
    q = payload.query
    if method != "GET" or q.get("hub.mode") != "subscribe" or "hub.challenge" not in q:
        return None
    found = _challenge(q.get("hub.challenge"))
    if not isinstance(found, str):
        return found or _refused(400, "no_challenge")
    token = q.get("hub.verify_token", "").encode("utf-8", "surrogateescape")
    if not any(hmac.compare_digest(t, token) for t in keys.verify_tokens):
        return _refused(403, "verify_token_mismatch")
    return Answer(200, found, TEXT)


def _msgraph(_method: str, payload: Payload, _keys: Keys) -> Answer | None:
    if "validationToken" not in payload.query:
        return None
    found = _challenge(payload.query.get("validationToken"))
    if not isinstance(found, str):
        return found or _refused(400, "no_validation_token")
    return Answer(200, found, TEXT)


def _x(method: str, payload: Payload, keys: Keys) -> Answer | None:
    if method != "GET" or "crc_token" not in payload.query:
        return None
    found = _challenge(payload.query.get("crc_token"))
    if not isinstance(found, str):
        return found or _refused(400, "no_crc_token")
    digest = hmac.new(keys.secrets[0], found.encode("utf-8"), hashlib.sha256).digest()
    token = "sha256=" + base64.b64encode(digest).decode("ascii")
    return Answer(200, json.dumps({"response_token": token}), JSON)


def _dropbox(method: str, payload: Payload, _keys: Keys) -> Answer | None:
    if method != "GET" or "challenge" not in payload.query:
        return None
    found = _challenge(payload.query.get("challenge"))
    if not isinstance(found, str):
        return found or _refused(400, "no_challenge")
    return Answer(200, found, TEXT)


_CHECKS: Final[Mapping[str, Callable[[str, Payload, Keys], Answer | None]]] = {
    "slack": _slack,
    "zoom": _zoom,
    "meta": _meta,
    "msgraph": _msgraph,
    "x": _x,
    "dropbox": _dropbox,
}
PROVIDERS: Final = tuple(_CHECKS)


def takes(provider: str | None, method: str) -> bool:
    """Whether ``method`` may reach the route for its provider's check alone."""
    return provider in GET_CHECKS and method == "GET"


def answer(provider: str, method: str, payload: Payload, keys: Keys) -> Answer | None:
    """The answer to ``provider``'s URL check, or None when the request is not one."""
    return _CHECKS[provider](method, payload, keys)
