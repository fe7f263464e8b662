"""Console sessions and CSRF tokens, signed with HMAC-SHA256 (no I/O).

A session cookie is ``nonce.expires.kind.signature``: ``kind`` is ``a`` once
the operator gave the admin token (or none is configured), ``n`` before, so the
login form itself carries a CSRF token. The CSRF token is an HMAC of the nonce:
a page of another origin can neither read it nor forge it. The signing key is
derived from the admin token where there is one (sessions survive a restart,
and end when the token is changed), else random per process.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

COOKIE: Final = "relay_console"
LIFETIME: Final = 12 * 3600.0


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    expires: float
    authed: bool


def signing_key(admin_token: str | None) -> bytes:
    """The key sessions are signed with: from the token, or fresh for this process."""
    secret = admin_token.encode() if admin_token else secrets.token_bytes(32)
    return hmac.new(secret, b"webhook-relay console session", hashlib.sha256).digest()


class Signer:
    def __init__(self, key: bytes, lifetime: float = LIFETIME) -> None:
        self._key = key
        self.lifetime = lifetime

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(self, now: float, *, authed: bool) -> tuple[Session, str]:
        """A new session (a new nonce: logging in never keeps the old one) and its cookie."""
        session = Session(secrets.token_hex(16), float(int(now + self.lifetime)), authed)
        body = f"{session.nonce}.{int(session.expires)}.{'a' if authed else 'n'}"
        return session, f"{body}.{self._sign(body)}"

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie carries; None if it is missing, forged or expired."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 4:
            return None
        nonce, expires, kind, signature = parts
        body = f"{nonce}.{expires}.{kind}"
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        if kind not in ("a", "n") or not expires.isdigit() or float(expires) <= now:
            return None
        return Session(nonce, float(expires), kind == "a")

    def csrf(self, session: Session) -> str:
        return self._sign(f"csrf:{session.nonce}")[:32]

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        if session is None or not given:
            return False
        return hmac.compare_digest(given, self.csrf(session))
