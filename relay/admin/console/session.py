"""Console sessions and CSRF tokens, signed with HMAC-SHA256 (no I/O).

A session cookie is ``nonce.expires.kind.label.signature``: ``kind`` is ``o``
(operate) or ``r`` (read) once the operator gave an admin token (``o`` where none
is configured), with that token's label; ``n`` before, so the login form itself
carries a CSRF token. The CSRF token is an HMAC of the nonce:
a page of another origin can neither read it nor forge it. The signing key is
random per process and made anew when the admin token changes, so every session
ends on a restart or a token change; signing out revokes the session's nonce,
so a copied cookie stops working with it.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Final

COOKIE: Final = "relay_console"
LIFETIME: Final = 12 * 3600.0


KINDS: Final = {"o": "operate", "r": "read"}


@dataclass(frozen=True, slots=True)
class Session:
    nonce: str
    expires: float
    authed: bool
    label: str = ""
    role: str = ""


def signing_key() -> bytes:
    """A fresh key: nothing signed by an earlier process or an earlier token verifies."""
    return secrets.token_bytes(32)


class Signer:
    def __init__(self, key: bytes, lifetime: float = LIFETIME) -> None:
        self._key = key
        self.lifetime = lifetime
        # Signed-out nonces until their cookie would have expired anyway. Only a
        # signed-in session can be signed out, so this grows with logins, not guesses.
        self._revoked: dict[str, float] = {}

    def revoke(self, session: Session, now: float) -> None:
        self._revoked = {n: exp for n, exp in self._revoked.items() if exp > now}
        self._revoked[session.nonce] = session.expires

    def _sign(self, text: str) -> str:
        return hmac.new(self._key, text.encode(), hashlib.sha256).hexdigest()

    def issue(
        self, now: float, *, authed: bool, label: str = "", role: str = ""
    ) -> tuple[Session, str]:
        """A new session (a new nonce: logging in never keeps the old one) and its cookie.
        ``label`` has no dots (the config allows letters, digits, _ and -)."""
        kind = "o" if authed and role == "operate" else "r" if authed else "n"
        session = Session(
            secrets.token_hex(16),
            float(int(now + self.lifetime)),
            authed,
            label if authed else "",
            KINDS.get(kind, ""),
        )
        body = f"{session.nonce}.{int(session.expires)}.{kind}.{label if authed else ''}"
        return session, f"{body}.{self._sign(body)}"

    def read(self, cookie: str | None, now: float) -> Session | None:
        """The session a cookie carries; None if it is missing, forged, expired or
        signed out."""
        if not cookie:
            return None
        parts = cookie.split(".")
        if len(parts) != 5:
            return None
        nonce, expires, kind, label, signature = parts
        body = f"{nonce}.{expires}.{kind}.{label}"
        if not hmac.compare_digest(signature, self._sign(body)):
            return None
        if kind not in ("o", "r", "n") or not expires.isdigit() or float(expires) <= now:
            return None
        if nonce in self._revoked:
            return None
        return Session(nonce, float(expires), kind != "n", label, KINDS.get(kind, ""))

    def csrf(self, session: Session) -> str:
        return self._sign(f"csrf:{session.nonce}")[:32]

    def csrf_ok(self, session: Session | None, given: str | None) -> bool:
        if session is None or not given:
            return False
        return hmac.compare_digest(given, self.csrf(session))
